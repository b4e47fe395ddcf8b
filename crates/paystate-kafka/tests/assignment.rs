//! The decoder of a group member's assignment (bytes the broker hands back as they were sent by the
//! group's leader): known answers written from the protocol's layout, a round trip against an encoder
//! of that layout, and arbitrary bytes never panic nor invent partitions beyond what they hold.

use paystate_kafka::group::{admin_url_of, assigned_partitions, client_id};
use proptest::prelude::*;

/// `ConsumerProtocolAssignment` as Kafka's protocol defines it: version int16, [topic string (int16
/// length), [partition int32] (int32 count)] (int32 count), user data bytes (int32 length, -1 = null).
fn encode(version: i16, topics: &[(&str, Vec<i32>)], user_data: &[u8]) -> Vec<u8> {
    let mut out = version.to_be_bytes().to_vec();
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for (name, parts) in topics {
        out.extend_from_slice(&(name.len() as i16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(parts.len() as i32).to_be_bytes());
        for p in parts {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    out.extend_from_slice(&(user_data.len() as i32).to_be_bytes());
    out.extend_from_slice(user_data);
    out
}

#[test]
fn known_assignments() {
    // Written out byte by byte: version 0, one topic "t" with partitions 2 and 0, no user data.
    let bytes = [0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(assigned_partitions(&bytes, "t"), Some(vec![0, 2]));
    assert_eq!(assigned_partitions(&bytes, "other"), Some(vec![]));
    // A member that was given nothing sends no bytes at all.
    assert_eq!(assigned_partitions(&[], "t"), Some(vec![]));
    // Two topics: only the raw topic's partitions count.
    let two = encode(1, &[("stripe.events", vec![5, 1]), ("paystate.payments", vec![3])], b"ud");
    assert_eq!(assigned_partitions(&two, "stripe.events"), Some(vec![1, 5]));
    // Cut short: not an assignment.
    assert_eq!(assigned_partitions(&two[..9], "stripe.events"), None);
    // A count larger than the bytes left is refused without allocating for it.
    let mut huge = encode(0, &[("t", vec![1])], b"");
    huge[9..13].copy_from_slice(&i32::MAX.to_be_bytes());
    assert_eq!(assigned_partitions(&huge, "t"), None);
}

#[test]
fn a_client_id_carries_the_admin_url_or_nothing() {
    let id = client_id("paystate-project-7-ab", Some("http://10.0.0.5:9090"));
    assert_eq!(id, "paystate-project-7-ab@http://10.0.0.5:9090");
    assert_eq!(admin_url_of(&id), Some("http://10.0.0.5:9090"));
    assert_eq!(admin_url_of(&client_id("paystate-project-7-ab", None)), None);
    // Another program's client id, even with an `@`, is no URL.
    assert_eq!(admin_url_of("rdkafka@host"), None);
    assert_eq!(admin_url_of("paystate-group-watch"), None);
}

proptest! {
    #[test]
    fn any_admin_url_comes_back(host in "[a-z0-9.-]{1,30}", port in 1u16.., tls in any::<bool>()) {
        let url = format!("{}://{host}:{port}", if tls { "https" } else { "http" });
        let id = client_id("paystate-project-1-x", Some(&url));
        prop_assert_eq!(admin_url_of(&id), Some(url.as_str()));
    }

    #[test]
    fn round_trip(version in 0i16..4, parts in proptest::collection::vec(0i32..10_000, 0..64),
                  others in proptest::collection::vec(0i32..10_000, 0..8), ud in proptest::collection::vec(any::<u8>(), 0..16)) {
        let bytes = encode(version, &[("other", others), ("raw", parts.clone())], &ud);
        let mut want: Vec<u32> = parts.iter().map(|p| *p as u32).collect();
        want.sort_unstable();
        want.dedup();
        prop_assert_eq!(assigned_partitions(&bytes, "raw"), Some(want));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Some(parts) = assigned_partitions(&bytes, "t") {
            // Every partition came from four bytes of the input.
            prop_assert!(parts.len() * 4 <= bytes.len());
        }
    }
}
