//! The log record decoder and the admin API's frame decoder on any bytes: never a panic; what decodes
//! encodes to bytes that decode to the same record, the same bytes for a version-1 record (a version-2
//! record may name the webhook origin, which this release writes as version 1), and frames decode to what
//! put_frame wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystate_store::{decode_frames, put_frame, LogRecord, RecordRef};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = RecordRef::decode(data) {
        let owned = LogRecord::from(r);
        let encoded = owned.encode().expect("a decoded record encodes");
        assert_eq!(LogRecord::decode(&encoded).expect("decodes again"), owned);
        if data.first() == Some(&1) {
            assert_eq!(encoded, data, "one encoding per version-1 record");
        }
    }
    if let Ok(frames) = decode_frames(data) {
        let mut again = Vec::new();
        for (offset, record) in &frames {
            put_frame(&mut again, *offset, &record.encode().expect("encodes")).expect("frame");
        }
        assert_eq!(decode_frames(&again).expect("frames decode again"), frames, "frames round-trip");
    }
});
