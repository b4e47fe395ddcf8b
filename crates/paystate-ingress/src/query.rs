//! The admin API's query strings, read strictly: an unknown parameter, a value that does not parse or one
//! out of range is a `400` JSON answer naming the parameter and the valid ones, never ignored.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::str::FromStr;

/// A route's parameters: the names it takes (a name ending in `[]` takes any key in the brackets:
/// `metadata[]` matches `metadata[order_id]`).
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
    valid: &'static [&'static str],
}

/// A query the route does not take: answered `400 {"error": "bad_query", "message": …, "parameter": …,
/// "valid_parameters": […]}`.
#[derive(Debug)]
pub(crate) struct BadQuery {
    valid: &'static [&'static str],
    parameter: Option<String>,
    message: String,
}

impl IntoResponse for BadQuery {
    fn into_response(self) -> Response {
        let body = json!({
            "error": "bad_query",
            "message": self.message,
            "parameter": self.parameter,
            "valid_parameters": self.valid,
        });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

fn bad(valid: &'static [&'static str], parameter: Option<&str>, message: String) -> BadQuery {
    BadQuery { valid, parameter: parameter.map(str::to_owned), message }
}

impl Params {
    /// Reads `query` (the URI's, undecoded) for a route taking `valid`.
    pub(crate) fn read(query: Option<&str>, valid: &'static [&'static str]) -> Result<Self, BadQuery> {
        let raw = query.unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| bad(valid, None, format!("the query string is not URL-encoded pairs: {e}")))?;
        for (name, _) in &pairs {
            if !valid.iter().any(|v| matches(v, name)) {
                let list = valid.join(", ");
                return Err(bad(valid, Some(name), format!("unknown parameter `{name}`; this route takes {list}")));
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for (name, _) in &pairs {
            if seen.contains(&name.as_str()) {
                return Err(bad(valid, Some(name), format!("`{name}` is given twice")));
            }
            seen.push(name);
        }
        Ok(Params { pairs, valid })
    }

    /// The raw value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `name` parsed as a `T`, described as `what` in the error (`an integer from 1 to 1000`).
    pub(crate) fn parse<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, BadQuery> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad(self.valid, Some(name), format!("`{name}` must be {what}, not {v:?}"))),
        }
    }

    /// An integer parameter within `range` (inclusive), `default` when absent.
    pub(crate) fn bounded(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, BadQuery> {
        let what = format!("an integer from {} to {}", range.start(), range.end());
        match self.parse::<u64>(name, &what)? {
            None => Ok(default),
            Some(n) if range.contains(&n) => Ok(n),
            Some(n) => Err(bad(self.valid, Some(name), format!("`{name}` must be {what}, not {n}"))),
        }
    }

    /// The bracketed keys and values of a `prefix[]` parameter (`metadata[order_id]=42`: `("order_id", "42")`).
    pub(crate) fn keyed(&self, prefix: &str) -> Vec<(&str, &str)> {
        self.pairs
            .iter()
            .filter_map(|(n, v)| n.strip_prefix(prefix)?.strip_prefix('[')?.strip_suffix(']').map(|k| (k, v.as_str())))
            .collect()
    }

    /// A `400` about `name` for a value the caller found wrong.
    pub(crate) fn invalid(&self, name: &str, message: String) -> BadQuery {
        bad(self.valid, Some(name), message)
    }
}

fn matches(valid: &str, name: &str) -> bool {
    match valid.strip_suffix("[]") {
        Some(prefix) if !prefix.is_empty() && !prefix.ends_with(']') => name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('['))
            .and_then(|r| r.strip_suffix(']'))
            // Keys without brackets (as Stripe's metadata keys): `metadata[a][b]` is not a key.
            .is_some_and(|k| !k.is_empty() && !k.contains(['[', ']'])),
        _ => valid == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &[&str] = &["limit", "after", "metadata[]", "created[gte]"];

    fn code(r: Result<Params, BadQuery>) -> Option<StatusCode> {
        r.err().map(|e| e.into_response().status())
    }

    #[test]
    fn names_are_checked_values_parsed_and_bounded() {
        let p = Params::read(Some("limit=5&metadata%5Border_id%5D=o%2042&created[gte]=10"), VALID).expect("valid");
        assert_eq!(p.bounded("limit", 1..=100, 10).expect("in range"), 5);
        assert_eq!(p.keyed("metadata"), [("order_id", "o 42")]);
        assert_eq!(p.parse::<i64>("created[gte]", "unix seconds").expect("int"), Some(10));
        assert_eq!(p.bounded("after", 1..=9, 3).expect("absent"), 3);
        for bad in [
            "limit=5&bogus=1",
            "metadata[]=1",
            "metadata[a][b]=1",
            "metadata[]][=1",
            "metadata=1",
            "limit=1&limit=2",
            "created=1",
        ] {
            assert_eq!(code(Params::read(Some(bad), VALID)), Some(StatusCode::BAD_REQUEST), "{bad}");
        }
        let p = Params::read(Some("limit=0"), VALID).expect("names valid");
        assert_eq!(
            p.bounded("limit", 1..=100, 10).expect_err("out of range").into_response().status(),
            StatusCode::BAD_REQUEST
        );
        let p = Params::read(Some("limit=ten"), VALID).expect("names valid");
        assert!(p.bounded("limit", 1..=100, 10).is_err());
        assert!(Params::read(None, VALID).expect("empty").get("limit").is_none());
    }
}
