//! `server.schedules`: jobs the server queues on a timetable, as Woodpecker's cron pipelines
//! and Gitea Actions' `on: schedule`.
//!
//! Expressions are parsed and their occurrences computed by `croner`, not the `cron` crate:
//! `cron` wants a seconds field (6 or 7 fields, so `0 3 * * *` is an error there) and ANDs the
//! day-of-month and day-of-week fields, where every cron since Vixie's runs on either; croner
//! reads the standard 5 fields with that rule, is maintained, and depends on little (chrono,
//! already ours). Its extensions beyond standard cron (`L`, `W`, `#`, `?`, a seconds or year
//! field) are refused here, so an expression means the same as in a crontab, in Woodpecker or
//! in Gitea.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use raibid_model::PoolName;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One schedule: a job for the head of `branch` of `repo` at every occurrence of `cron`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Unique; names the schedule in logs, the API, the job (`CI_PIPELINE_CRON`) and its
    /// delivery id.
    pub name: ScheduleName,
    /// `owner/name`, as webhooks name it.
    pub repo: String,
    pub clone_url: String,
    /// Built at its head when an occurrence comes.
    #[serde(default = "main_branch")]
    pub branch: String,
    /// When, in UTC.
    pub cron: CronExpr,
    /// None: the repository's pool, as its webhooks get it (`pool_rules`, `default_pool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolName>,
    /// Variables for every step, as `raibid job submit --env` gives them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

fn main_branch() -> String {
    "main".into()
}

/// A schedule's name: `[a-z0-9][a-z0-9._-]*`, at most 100 characters. It goes into a Redis key
/// and a delivery id (`cron:<name>:<time>`), so it keeps to characters that need no quoting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ScheduleName(String);

impl ScheduleName {
    pub fn new(name: impl Into<String>) -> Result<Self, String> {
        let name = name.into();
        let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if name.len() <= 100
            && name.bytes().next().is_some_and(ok)
            && name
                .bytes()
                .all(|b| ok(b) || matches!(b, b'.' | b'_' | b'-'))
        {
            Ok(Self(name))
        } else {
            Err(format!(
                "invalid schedule name {name:?}: 1-100 characters of a-z, 0-9, '.', '_', '-', \
                 starting with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScheduleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads a string and checks it inside the deserializer's own call, so that `serde_yaml` marks
/// an error with the value's line and key (an error raised after `String::deserialize` has
/// returned is marked at the enclosing entry instead).
struct Checked<T>(&'static str, fn(&str) -> Result<T, String>);

impl<T> Visitor<'_> for Checked<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.1)(text).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ScheduleName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Checked("a schedule name", |s| Self::new(s)))
    }
}

/// A cron expression in UTC: 5 fields (minute, hour, day of month, month, day of week) with
/// lists, ranges, steps and names (`mon`, `jan`), or `@hourly`, `@daily` (`@midnight`),
/// `@weekly`, `@monthly`, `@yearly` (`@annually`). Kept as written, for display.
#[derive(Clone)]
pub struct CronExpr {
    text: String,
    cron: Cron,
}

impl CronExpr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let fields = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_owned(),
            "@monthly" => "0 0 1 * *".to_owned(),
            "@weekly" => "0 0 * * 0".to_owned(),
            "@daily" | "@midnight" => "0 0 * * *".to_owned(),
            "@hourly" => "0 * * * *".to_owned(),
            other if other.starts_with('@') => {
                return Err(format!(
                    "unknown cron shorthand {trimmed:?} (use @hourly, @daily, @midnight, \
                     @weekly, @monthly, @yearly or @annually)"
                ));
            }
            other => other.to_owned(),
        };
        let count = fields.split_whitespace().count();
        if count != 5 {
            return Err(format!(
                "cron expression {trimmed:?} has {count} fields; write 5: minute hour \
                 day-of-month month day-of-week (UTC), e.g. \"0 3 * * *\""
            ));
        }
        if let Some(token) = fields
            .split_whitespace()
            .flat_map(|field| field.split([',', '-', '/']))
            .find(|token| !standard_token(token))
        {
            return Err(format!(
                "cron expression {trimmed:?}: {token:?} is not a number, `*` or a month or day \
                 name (standard cron only: no L, W, # or ?)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&fields)
            .map_err(|e| format!("cron expression {trimmed:?}: {e}"))?;
        // An expression can be valid and never match (`0 0 30 2 *`): refused, as it would
        // otherwise be a schedule that silently never runs.
        cron.find_next_occurrence(&DateTime::<Utc>::UNIX_EPOCH, false)
            .map_err(|_| format!("cron expression {trimmed:?} never matches a date"))?;
        Ok(Self {
            text: trimmed.to_owned(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first occurrence strictly after `t`; `None` if there is none (past year 5000).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The latest occurrence at or before `t`.
    pub fn latest_until(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t, true).ok()
    }

    /// The last occurrence strictly before `t`.
    pub fn previous_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t, false).ok()
    }
}

/// `*`, a number, or a 3-letter month or day name (names are checked by croner's parser).
fn standard_token(token: &str) -> bool {
    token == "*"
        || (!token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()))
        || (token.len() == 3 && token.bytes().all(|b| b.is_ascii_lowercase()) && is_name(token))
}

fn is_name(token: &str) -> bool {
    const NAMES: [&str; 19] = [
        "sun", "mon", "tue", "wed", "thu", "fri", "sat", "jan", "feb", "mar", "apr", "may", "jun",
        "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    NAMES.contains(&token)
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.text)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for CronExpr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for CronExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Checked("a cron expression", Self::parse))
    }
}

/// `server.schedules`, refusing a name used twice.
///
/// The check runs inside the reading of each entry, so the error carries the duplicate entry's
/// line and its path (`server.schedules[1]`), like any other error in the file or an override.
pub(crate) fn unique<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Schedule>, D::Error> {
    struct List;
    impl<'de> Visitor<'de> for List {
        type Value = Vec<Schedule>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of schedules")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut seen = HashSet::new();
            let mut list = Vec::new();
            while let Some(schedule) = seq.next_element_seed(Entry { seen: &mut seen })? {
                list.push(schedule);
            }
            Ok(list)
        }
    }

    struct Entry<'a> {
        seen: &'a mut HashSet<ScheduleName>,
    }
    impl<'de> DeserializeSeed<'de> for Entry<'_> {
        type Value = Schedule;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Schedule, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Entry<'_> {
        type Value = Schedule;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a schedule (name, repo, clone_url, branch, cron, pool, env)")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Schedule, A::Error> {
            let schedule = Schedule::deserialize(de::value::MapAccessDeserializer::new(map))?;
            if !self.seen.insert(schedule.name.clone()) {
                return Err(de::Error::custom(format!(
                    "schedule name {:?} is used twice; names must be unique",
                    schedule.name.as_str()
                )));
            }
            Ok(schedule)
        }
    }

    d.deserialize_seq(List)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn next(expr: &str, after: DateTime<Utc>) -> DateTime<Utc> {
        CronExpr::parse(expr).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn next_occurrences_in_utc() {
        let t = at(2026, 3, 4, 10, 15); // a Wednesday
        assert_eq!(next("0 3 * * *", t), at(2026, 3, 5, 3, 0));
        assert_eq!(next("*/20 * * * *", t), at(2026, 3, 4, 10, 20));
        assert_eq!(next("0 9-17/4 * * *", t), at(2026, 3, 4, 13, 0));
        assert_eq!(next("30 2 * * mon,fri", t), at(2026, 3, 6, 2, 30));
        assert_eq!(next("0 0 1 jan *", t), at(2027, 1, 1, 0, 0));
        assert_eq!(next("0 0 * * 7", t), at(2026, 3, 8, 0, 0)); // 7 is Sunday too
        // Strictly after: an occurrence at `t` itself is not the next one.
        assert_eq!(next("15 10 * * *", t), at(2026, 3, 5, 10, 15));
        // Day of month or day of week, as every cron since Vixie's: the 10th, or a Monday.
        assert_eq!(next("0 0 10 * mon", t), at(2026, 3, 9, 0, 0));
    }

    #[test]
    fn shorthands() {
        let t = at(2026, 3, 4, 10, 15);
        assert_eq!(next("@hourly", t), at(2026, 3, 4, 11, 0));
        assert_eq!(next("@daily", t), at(2026, 3, 5, 0, 0));
        assert_eq!(next("@midnight", t), at(2026, 3, 5, 0, 0));
        assert_eq!(next("@weekly", t), at(2026, 3, 8, 0, 0));
        assert_eq!(next("@monthly", t), at(2026, 4, 1, 0, 0));
        assert_eq!(next("@yearly", t), at(2027, 1, 1, 0, 0));
        assert_eq!(next("@Annually", t), at(2027, 1, 1, 0, 0));
    }

    #[test]
    fn previous_occurrences() {
        let cron = CronExpr::parse("0 3 * * *").unwrap();
        let t = at(2026, 3, 4, 3, 0);
        assert_eq!(cron.latest_until(t), Some(t));
        assert_eq!(cron.previous_before(t), Some(at(2026, 3, 3, 3, 0)));
        assert_eq!(
            cron.latest_until(at(2026, 3, 4, 2, 59)),
            Some(at(2026, 3, 3, 3, 0))
        );
    }

    #[test]
    fn non_standard_or_impossible_expressions_are_refused() {
        for bad in [
            "",
            "0 3 * *",
            "0 0 3 * * *",
            "0 3 * * * 2026",
            "61 * * * *",
            "0 24 * * *",
            "0 3 L * *",
            "0 3 15W * *",
            "0 3 * * 5#2",
            "0 3 ? * *",
            "0 3 * * 5L",
            "0 0 30 2 *",
            "@reboot",
            "0 3 * * funday",
            "0 3 1-x * *",
            "*/0 * * * *",
        ] {
            assert!(CronExpr::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn names() {
        for good in ["nightly", "a", "0", "release-1.x_full"] {
            assert!(ScheduleName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "Nightly",
            "a b",
            "a:b",
            "a/b",
            &"a".repeat(101),
        ] {
            assert!(ScheduleName::new(bad).is_err(), "{bad}");
        }
    }
}
