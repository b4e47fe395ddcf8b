//! The consumer group as Kafka sees it, for status and metrics: who owns which partition of the raw
//! topic, what the group committed and how far that is behind each partition's end — what
//! `kafka-consumer-groups --describe` prints. A projector that owns no partition, or a group in which a
//! partition has no owner, is not caught up, whatever its own lag says.
//!
//! A [`GroupWatch`] thread refreshes the view every [`REFRESH`] with a client of its own (it never joins
//! the group): `DescribeGroups` for the members and their assignments, `OffsetFetch` for the committed
//! offsets, `ListOffsets` for the ends.

use crate::{KafkaConfig, KafkaLogError};
use paystate_store::{GroupMember, GroupPartition, GroupView};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the group's view is refreshed.
pub const REFRESH: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(5);

/// The partitions of `topic` in a member's assignment as the classic consumer protocol encodes it
/// (`ConsumerProtocolAssignment`: version int16, then an array of (topic string, array of int32
/// partitions), then user data bytes; arrays and strings length-prefixed big-endian). `None` when the
/// bytes are not such an assignment. An empty assignment (no bytes) owns nothing.
pub fn assigned_partitions(bytes: &[u8], topic: &str) -> Option<Vec<u32>> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
        }
        fn i32(&mut self) -> Option<i32> {
            self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(r.i16()?).ok()?;
        let name = r.take(len)?;
        let count = r.i32()?;
        // Each partition takes four bytes: a count beyond what is left is not an assignment.
        if usize::try_from(count).ok()? > r.0.len() / 4 {
            return None;
        }
        for _ in 0..count {
            let p = r.i32()?;
            if name == topic.as_bytes() {
                out.push(u32::try_from(p).ok()?);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// What separates a member's name from its admin URL in its `client.id`.
const ADMIN_MARK: char = '@';

/// The `client.id` of a member named `name` (no `@` in it) whose admin API answers at `admin_url`: the
/// group's description carries it to every other member, which can then forward a query for a payment of
/// a partition this member owns (`paystate_ingress`'s payment routes).
pub fn client_id(name: &str, admin_url: Option<&str>) -> String {
    match admin_url {
        Some(url) => format!("{name}{ADMIN_MARK}{url}"),
        None => name.to_owned(),
    }
}

/// The admin URL a member's `client.id` carries ([`client_id`]), if it is one.
pub fn admin_url_of(client_id: &str) -> Option<&str> {
    let (_, url) = client_id.split_once(ADMIN_MARK)?;
    (url.starts_with("http://") || url.starts_with("https://")).then_some(url)
}

/// Refreshes a [`GroupView`] of `group` on `cfg.raw_topic` into a shared slot, on a thread of its own,
/// until dropped.
pub struct GroupWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for GroupWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWatch").finish_non_exhaustive()
    }
}

impl GroupWatch {
    /// Starts watching into `view`. `owned` gives this member's partitions; `ends` is raised to each partition's end
    /// as the watch learns it (so a member's lag counts partitions it never fetched).
    pub fn start(
        cfg: &KafkaConfig,
        group: &str,
        me: &str,
        partitions: u32,
        owned: Arc<dyn Fn() -> Vec<u32> + Send + Sync>,
        ends: Arc<Vec<AtomicU64>>,
        view: Arc<Mutex<Option<GroupView>>>,
    ) -> Result<GroupWatch, KafkaLogError> {
        let client: BaseConsumer = cfg
            .client(&[("group.id", group), ("enable.auto.commit", "false"), ("client.id", "paystate-group-watch")])
            .create()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (v, s, topic, group) = (Arc::clone(&view), Arc::clone(&stop), cfg.raw_topic.clone(), group.to_owned());
        let me = me.to_owned();
        let thread = std::thread::Builder::new()
            .name("kafka-group-watch".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    let next = observe(&client, &group, &me, &topic, partitions, &owned(), &ends);
                    *v.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(next);
                    let mut slept = Duration::ZERO;
                    while slept < REFRESH && !s.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(50));
                        slept += Duration::from_millis(50);
                    }
                }
            })
            .map_err(|e| KafkaLogError::Timeout(format!("starting the group watch: {e}")))?;
        Ok(GroupWatch { stop, thread: Some(thread) })
    }
}

impl Drop for GroupWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One observation of the group. A request that fails leaves its part unknown and says why in `error`:
/// the view is then not caught up.
fn observe(
    client: &BaseConsumer,
    group: &str,
    me: &str,
    topic: &str,
    partitions: u32,
    owned: &[u32],
    ends: &[AtomicU64],
) -> GroupView {
    let mut errors = Vec::new();
    let mut members = Vec::new();
    let mut state = String::from("Unknown");
    match client.fetch_group_list(Some(group), TIMEOUT) {
        Ok(list) => {
            if let Some(g) = list.groups().iter().find(|g| g.name() == group) {
                state = g.state().to_owned();
                for m in g.members() {
                    let partitions = match m.assignment().map(|a| assigned_partitions(a, topic)) {
                        None => Some(Vec::new()),
                        Some(p) => p,
                    };
                    if partitions.is_none() {
                        errors.push(format!("member {}: an assignment that does not decode", m.client_id()));
                    }
                    members.push(GroupMember {
                        member_id: m.id().to_owned(),
                        client_id: m.client_id().to_owned(),
                        host: m.client_host().to_owned(),
                        partitions: partitions.unwrap_or_default(),
                        admin_url: admin_url_of(m.client_id()).map(str::to_owned),
                    });
                }
            }
        }
        Err(e) => errors.push(format!("describing the group: {e}")),
    }
    let mut committed = vec![None; partitions as usize];
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, i32::try_from(p).unwrap_or(i32::MAX));
    }
    match client.committed_offsets(tpl, TIMEOUT) {
        Ok(list) => {
            for e in list.elements_for_topic(topic) {
                if let (Ok(p), Offset::Offset(o)) = (usize::try_from(e.partition()), e.offset()) {
                    if let Some(slot) = committed.get_mut(p) {
                        *slot = u64::try_from(o).ok();
                    }
                }
            }
        }
        Err(e) => errors.push(format!("fetching the committed offsets: {e}")),
    }
    let mut parts = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let end = match client.fetch_watermarks(topic, i32::try_from(p).unwrap_or(i32::MAX), TIMEOUT) {
            Ok((_, hi)) => u64::try_from(hi).ok(),
            Err(e) => {
                errors.push(format!("partition {p}: fetching its end: {e}"));
                None
            }
        };
        if let (Some(end), Some(slot)) = (end, ends.get(p as usize)) {
            slot.fetch_max(end, Ordering::AcqRel);
        }
        let committed = committed.get(p as usize).copied().flatten();
        let owner = members.iter().find(|m| m.partitions.contains(&p)).map(|m| m.client_id.clone());
        let lag = match (end, committed) {
            (Some(end), Some(c)) => Some(end.saturating_sub(c)),
            // Nothing committed yet: all of it is still to be read (as if the partition started at 0).
            (Some(end), None) => Some(end),
            (None, _) => None,
        };
        parts.push(GroupPartition { partition: p, end, committed, lag, owner });
    }
    GroupView::new(group.to_owned(), state, members, me, owned.to_vec(), parts, errors)
}
