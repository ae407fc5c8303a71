//! A structure-aware mutation for texts that are JSON objects: it works on whole members.
//!
//! libFuzzer's byte mutations rarely turn a valid message into another *valid* message
//! of a different shape — a second `"msg"` member, say, which must be refused (rule 2.5).
//! Planted in `duplicate_key`, a bug that let short duplicate names through went unfound
//! in 7.5 M byte-level runs (five runs of 60–90 s, even with whole members in the
//! dictionary), though any valid ROUTE with two `msg` members shows it. So the
//! `message_parse` target mutates members half of the time — duplicate one, drop one, swap
//! two, rename one to a protocol member, or mutate one value's bytes — and then finds that
//! bug within 850 to 4,000 runs.

use serde_json::value::RawValue;

/// The member names of the protocol (docs/protocol.md section 2).
const NAMES: [&str; 6] = ["type", "EpheWssAddr", "msg", "errCode", "errMsg", "extra"];

/// One member: its name (unescaped) and its value's exact text (which, once mutated, need
/// not be JSON any more).
type Member = (String, String);

/// The members of a JSON object, in order, duplicates kept; `None` if `text` is not one.
pub fn members(text: &str) -> Option<Vec<Member>> {
    Some(serde_json::from_str::<Members>(text).ok()?.0)
}

/// `{"name":value,...}`, in the given order.
fn render(members: &[Member]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(name, value)| {
            let name = serde_json::Value::from(name.as_str());
            format!("{name}:{value}")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// A small deterministic generator: libFuzzer hands each mutation a seed.
struct Rng(u32);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift32; the seed is never 0 after the `| 1`.
        self.0 |= 1;
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0 as usize % n.max(1)
    }
}

/// `text` after one member-level mutation; `None` when `text` is not a non-empty JSON
/// object (the caller then mutates bytes). `mutate_bytes` mutates one member's value; its
/// result need not be JSON (then serde_json's error paths get exercised).
pub fn mutate(text: &str, seed: u32, mutate_bytes: impl FnOnce(&str) -> String) -> Option<String> {
    let mut members = members(text)?;
    if members.is_empty() {
        return None;
    }
    let mut rng = Rng(seed);
    let i = rng.below(members.len());
    match rng.below(5) {
        0 => {
            let copy = members[i].clone();
            let at = rng.below(members.len() + 1);
            members.insert(at, copy);
        }
        1 => {
            members.remove(i);
        }
        2 => {
            let j = rng.below(members.len());
            members.swap(i, j);
        }
        3 => members[i].0 = NAMES[rng.below(NAMES.len())].to_owned(),
        _ => members[i].1 = mutate_bytes(&members[i].1),
    }
    Some(render(&members))
}

/// Members in order with duplicates (serde_json's `Map` would keep only the last).
struct Members(Vec<Member>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((name, value.get().to_owned()));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}
