//! A small validating JSON pull scanner, specialised for reading a few fields out of a Stripe event and
//! skipping the rest fast.
//!
//! Why not serde_json: a 2 KB event spends most of its bytes in fields the projection never reads
//! (`payment_method_details`, `billing_details`, indentation). serde_json visits them through its generic
//! machinery at roughly 0.5 GB/s here; this scanner skips them with word-at-a-time string and whitespace
//! scanning while still validating the JSON grammar completely (the differential tests in
//! `tests/json_differential.rs` hold it to serde_json's verdict on valid and invalid input).
//!
//! Input is `&str`, so UTF-8 is already validated; strings without escapes are borrowed.

use std::borrow::Cow;

/// Nesting deeper than this is refused (serde_json's default limit is 128 as well).
const MAX_DEPTH: usize = 128;

/// The document is not JSON: the byte offset where it stopped being JSON.
///
/// A value of the wrong type (valid JSON, not the shape expected) does not stop the scan: it is noted
/// with [`Scanner::note`] and scanning goes on, so that a document is reported as "not JSON" whenever it
/// is not, and as "not an event" only when it is JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanError(pub(crate) usize);

pub(crate) type Scan<T> = Result<T, ScanError>;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// One bit (the high bit of the byte) for each byte of `w` that is `"`, `\` or a control character
/// (< 0x20). The lowest set bit is exact (higher ones may be false positives from borrows), which is all
/// a forward scan needs.
#[inline]
fn string_special_mask(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero_quote = quote.wrapping_sub(ONES) & !quote;
    let zero_backslash = backslash.wrapping_sub(ONES) & !backslash;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (zero_quote | zero_backslash | control) & HIGHS
}

#[inline]
fn load(b: &[u8], i: usize) -> Option<u64> {
    let chunk: [u8; 8] = b.get(i..i + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

const SPACES: u64 = ONES * 0x20;

/// How many spaces start `b[p..]`, counting at most eight (0 near the end of input; the caller's loop
/// then goes byte by byte).
#[inline]
fn leading_spaces(b: &[u8], p: usize) -> usize {
    match load(b, p) {
        Some(w) => {
            let x = w ^ SPACES;
            if x == 0 {
                8
            } else {
                (x.trailing_zeros() / 8) as usize
            }
        }
        None => 0,
    }
}

/// A cursor over one JSON document.
#[derive(Debug)]
pub(crate) struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    depth: usize,
    shape: Option<&'static str>,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Scanner { text, b: text.as_bytes(), pos: 0, depth: 0, shape: None }
    }

    fn syntax<T>(&self) -> Scan<T> {
        Err(ScanError(self.pos))
    }

    /// Notes that the document is JSON but not the expected shape (the first note is kept).
    pub(crate) fn note(&mut self, what: &'static str) {
        self.shape.get_or_insert(what);
    }

    /// The first shape problem noted, if any.
    pub(crate) fn shape_error(&self) -> Option<&'static str> {
        self.shape
    }

    /// Skips JSON whitespace. Shaped for pretty-printed bodies: a single space after a colon, a newline
    /// followed by indentation (measured eight bytes at a time) after a comma.
    #[inline]
    pub(crate) fn ws(&mut self) {
        let b = self.b;
        let mut p = self.pos;
        loop {
            match b.get(p) {
                Some(b' ') => {
                    if b.get(p + 1).is_some_and(|&c| c > b' ') {
                        p += 1;
                        break;
                    }
                    p += leading_spaces(b, p).max(1);
                }
                Some(b'\n') => {
                    p += 1;
                    p += leading_spaces(b, p);
                }
                Some(b'\r' | b'\t') => p += 1,
                _ => break,
            }
        }
        self.pos = p;
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// The byte under the cursor, to choose how to read a value that may take several types.
    pub(crate) fn peek_byte(&self) -> Option<u8> {
        self.peek()
    }

    /// After the document: only whitespace may follow.
    pub(crate) fn end(&mut self) -> Scan<()> {
        self.ws();
        if self.pos == self.b.len() {
            Ok(())
        } else {
            self.syntax()
        }
    }

    /// Position of the next `"`, `\` or control character at or after `i` (or the end).
    #[inline]
    fn find_special(&self, mut i: usize) -> usize {
        while let Some(w) = load(self.b, i) {
            let mask = string_special_mask(w);
            if mask != 0 {
                return i + (mask.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        while let Some(&c) = self.b.get(i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            i += 1;
        }
        i
    }

    /// Reads a string (the cursor must be on its opening quote): borrowed when it has no escapes.
    fn string(&mut self) -> Scan<Cow<'a, str>> {
        if self.peek() != Some(b'"') {
            return self.syntax();
        }
        let start = self.pos + 1;
        let end = self.find_special(start);
        match self.b.get(end) {
            Some(b'"') => {
                self.pos = end + 1;
                // Both ends sit on ASCII quotes, so this is a char boundary of valid UTF-8.
                Ok(Cow::Borrowed(self.text.get(start..end).unwrap_or_default()))
            }
            Some(b'\\') => {
                let mut out = String::with_capacity(end - start + 8);
                out.push_str(self.text.get(start..end).unwrap_or_default());
                self.pos = end;
                self.decode_rest(&mut out)?;
                Ok(Cow::Owned(out))
            }
            _ => {
                self.pos = end;
                self.syntax()
            }
        }
    }

    /// Decodes escapes from the cursor (on a backslash or plain text) to the closing quote.
    fn decode_rest(&mut self, out: &mut String) -> Scan<()> {
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return self.syntax();
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.syntax();
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return self.syntax();
                            } else {
                                hi
                            };
                            match char::from_u32(code) {
                                Some(c) => out.push(c),
                                None => return self.syntax(),
                            }
                            continue;
                        }
                        _ => return self.syntax(),
                    };
                    self.pos += 1;
                    out.push(c);
                }
                Some(c) if c >= 0x20 => {
                    let end = self.find_special(self.pos);
                    out.push_str(self.text.get(self.pos..end).unwrap_or_default());
                    self.pos = end;
                }
                _ => return self.syntax(),
            }
        }
    }

    fn hex4(&mut self) -> Scan<u32> {
        let Some(digits) = self.b.get(self.pos..self.pos + 4) else { return self.syntax() };
        let mut v = 0u32;
        for &d in digits {
            let x = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return self.syntax(),
            };
            v = v * 16 + u32::from(x);
        }
        self.pos += 4;
        Ok(v)
    }

    /// Skips a string, validating its escapes (surrogates are not paired-checked: like serde_json, a
    /// skipped string is only checked for grammar).
    fn skip_string(&mut self) -> Scan<()> {
        self.pos += 1;
        loop {
            let end = self.find_special(self.pos);
            self.pos = end;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                        Some(b'u') => {
                            self.pos += 1;
                            self.hex4()?;
                        }
                        _ => return self.syntax(),
                    }
                }
                _ => return self.syntax(),
            }
        }
    }

    /// Validates a number's grammar; returns its text and whether it is an integer.
    fn number_text(&mut self) -> Scan<(&'a str, bool)> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
            }
            _ => return self.syntax(),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return self.syntax();
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return self.syntax();
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        Ok((self.text.get(start..self.pos).unwrap_or_default(), integer))
    }

    fn literal(&mut self, word: &'static [u8]) -> Scan<()> {
        if self.b.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.syntax()
        }
    }

    /// Skips any value, validating it.
    pub(crate) fn skip(&mut self) -> Scan<()> {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{') => self.object(|sc, _| sc.skip()),
            Some(b'[') => self.array(Self::skip),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number_text().map(|_| ()),
            _ => self.syntax(),
        }
    }

    fn enter(&mut self) -> Scan<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.syntax();
        }
        Ok(())
    }

    /// `null` (consumed, returns true) or something else (untouched, returns false).
    pub(crate) fn null(&mut self) -> Scan<bool> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// An optional string: `null` or a string; any other value is noted as a shape error.
    pub(crate) fn opt_string(&mut self) -> Scan<Option<Cow<'a, str>>> {
        if self.null()? {
            return Ok(None);
        }
        match self.peek() {
            Some(b'"') => self.string().map(Some),
            _ => self.wrong("expected a string").map(|()| None),
        }
    }

    /// An optional integer that fits in i64.
    pub(crate) fn opt_i64(&mut self) -> Scan<Option<i64>> {
        if self.null()? {
            return Ok(None);
        }
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => {
                let (text, integer) = self.number_text()?;
                if !integer {
                    self.note("expected an integer");
                    return Ok(None);
                }
                match text.parse::<i64>() {
                    Ok(v) => Ok(Some(v)),
                    Err(_) => {
                        self.note("integer out of range");
                        Ok(None)
                    }
                }
            }
            _ => self.wrong("expected an integer").map(|()| None),
        }
    }

    /// An optional boolean.
    pub(crate) fn opt_bool(&mut self) -> Scan<Option<bool>> {
        match self.peek() {
            Some(b'n') => self.literal(b"null").map(|()| None),
            Some(b't') => self.literal(b"true").map(|()| Some(true)),
            Some(b'f') => self.literal(b"false").map(|()| Some(false)),
            _ => self.wrong("expected a boolean").map(|()| None),
        }
    }

    /// Skips (validating) the value under the cursor and notes that it was not what was expected.
    pub(crate) fn wrong(&mut self, what: &'static str) -> Scan<()> {
        self.skip()?;
        self.note(what);
        Ok(())
    }

    /// Iterates an object's members: `f(scanner, key)` must consume the value.
    pub(crate) fn object(&mut self, mut f: impl FnMut(&mut Self, &str) -> Scan<()>) -> Scan<()> {
        self.sequence(b'{', b'}', "expected an object", |sc| {
            if sc.peek() != Some(b'"') {
                return sc.syntax();
            }
            let key = sc.string()?;
            sc.ws();
            if sc.peek() != Some(b':') {
                return sc.syntax();
            }
            sc.pos += 1;
            sc.ws();
            f(sc, &key)
        })
    }

    /// Iterates an array's elements: `f(scanner)` must consume each.
    pub(crate) fn array(&mut self, f: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        self.sequence(b'[', b']', "expected an array", f)
    }

    /// `open`, elements separated by commas, `close`; anything else under the cursor is a shape error.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        what: &'static str,
        mut element: impl FnMut(&mut Self) -> Scan<()>,
    ) -> Scan<()> {
        if self.peek() != Some(open) {
            return self.wrong(what);
        }
        self.enter()?;
        self.pos += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            element(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(c) if c == close => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return self.syntax(),
            }
        }
    }
}
