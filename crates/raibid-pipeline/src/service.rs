//! `services:`: containers that run beside a job's steps (a database, a cache), reachable from
//! every step by their name, as in Woodpecker and GitLab CI.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::de::{CheckedMap, StepEnvMap, checked_str};
use crate::step::ImageRef;

/// More services than this are a mistake or an attack on the agent's machine.
pub const MAX_SERVICES: usize = 8;

/// Longest `command` a service may have, in arguments.
const MAX_COMMAND_ARGS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The host name steps reach it by: a DNS label, unique among the job's services.
    pub name: String,
    pub image: String,
    pub env: BTreeMap<String, String>,
    /// Secrets to give the service as environment variables of the same name, as a step's
    /// `secrets:` (and under the same rules: allowed repositories, never for forks).
    pub secrets: Vec<String>,
    /// Replaces the image's default command (`CMD`); empty: the image's own.
    pub command: Vec<String>,
}

/// A name steps resolve through the engine's DNS: lowercase letters, digits and `-`, starting
/// with a letter and not ending with `-` (RFC 1123 labels, as Kubernetes names services).
pub(crate) fn service_name(name: &str) -> Result<String, String> {
    let valid = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not a service name: steps reach a service by its name, so use \
             lowercase letters, digits and '-', starting with a letter, at most 63 characters \
             (like `postgres` or `redis-cache`)"
        ))
    }
}

fn command(args: Vec<String>) -> Result<Vec<String>, String> {
    if args.is_empty() {
        return Err("`command` is empty; leave it out to run the image's own command".to_owned());
    }
    if args.len() > MAX_COMMAND_ARGS {
        return Err(format!(
            "`command` has {} arguments; at most {MAX_COMMAND_ARGS}",
            args.len()
        ));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err("`command` may not contain a NUL character".to_owned());
    }
    Ok(args)
}

checked_str!(ServiceName: String, "a service name like postgres", service_name);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<ServiceName>,
    image: Option<ImageRef>,
    env: Option<StepEnvMap>,
    #[serde(default, deserialize_with = "crate::step::secrets")]
    secrets: Vec<String>,
    command: Option<Vec<String>>,
}

impl RawService {
    fn into_service(self, taken: &BTreeSet<String>) -> Result<Service, String> {
        let Some(ServiceName(name)) = self.name else {
            return Err("this service has no `name`; steps reach a service by its name".to_owned());
        };
        if taken.contains(&name) {
            return Err(format!(
                "service name {name:?} is used by an earlier service; service names must be unique"
            ));
        }
        let Some(ImageRef(image)) = self.image else {
            return Err(format!(
                "service {name:?} has no `image`; a service is a container, like `image: postgres:16`"
            ));
        };
        let command = match self.command {
            Some(args) => command(args).map_err(|e| format!("service {name:?}: {e}"))?,
            None => Vec::new(),
        };
        Ok(Service {
            name,
            image,
            env: self.env.map(|e| e.0).unwrap_or_default(),
            secrets: self.secrets,
            command,
        })
    }
}

/// `services:` as written in YAML: a list of services with unique names.
pub(crate) struct Services(pub(crate) Vec<Service>);

impl<'de> Deserialize<'de> for Services {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ServicesVisitor)
    }
}

struct ServicesVisitor;

impl<'de> Visitor<'de> for ServicesVisitor {
    type Value = Services;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of services, each starting with `- name:`")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Services, A::Error> {
        let mut services = Vec::new();
        let mut taken = BTreeSet::new();
        while let Some(service) = seq.next_element_seed(CheckedMap::new(
            "a service: a mapping with `name` and `image`",
            |raw: RawService| raw.into_service(&taken),
        ))? {
            if services.len() == MAX_SERVICES {
                return Err(de::Error::custom(format!(
                    "more than {MAX_SERVICES} services; a job may have at most {MAX_SERVICES}"
                )));
            }
            taken.insert(service.name.clone());
            services.push(service);
        }
        Ok(Services(services))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(yaml: &str) -> Result<Vec<Service>, serde_yaml::Error> {
        serde_yaml::from_str::<Services>(yaml).map(|s| s.0)
    }

    fn error_at(yaml: &str) -> (usize, usize, String) {
        let err = services(yaml).unwrap_err();
        let loc = err.location().expect("error has a location");
        (loc.line(), loc.column(), err.to_string())
    }

    #[test]
    fn a_service_with_everything() {
        let s = services(
            "- name: db\n  image: postgres:16\n  env: {POSTGRES_PASSWORD: test}\n  secrets: [LICENSE_KEY]\n  command: [postgres, -c, fsync=off]\n- name: cache\n  image: redis:7\n",
        )
        .unwrap();
        assert_eq!(
            s[0],
            Service {
                name: "db".into(),
                image: "postgres:16".into(),
                env: BTreeMap::from([("POSTGRES_PASSWORD".into(), "test".into())]),
                secrets: vec!["LICENSE_KEY".into()],
                command: vec!["postgres".into(), "-c".into(), "fsync=off".into()],
            }
        );
        assert_eq!(s[1].name, "cache");
        assert!(s[1].command.is_empty() && s[1].env.is_empty() && s[1].secrets.is_empty());
        assert_eq!(services("[]").unwrap(), []);
    }

    #[test]
    fn bad_services_are_refused_where_they_are_written() {
        let (line, col, msg) = error_at("- name: Db_1\n  image: postgres:16\n");
        assert_eq!((line, col), (1, 9));
        assert!(msg.contains("not a service name"), "{msg}");
        let (line, col, msg) = error_at("- name: db\n  image: a\n- name: db\n  image: b\n");
        assert_eq!((line, col), (3, 3));
        assert!(msg.contains("used by an earlier service"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n");
        assert!(msg.contains("has no `image`"), "{msg}");
        let (_, _, msg) = error_at("- image: postgres:16\n");
        assert!(msg.contains("no `name`"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: postgres:16\n  command: []\n");
        assert!(msg.contains("`command` is empty"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: postgres:16\n  ports: [5432]\n");
        assert!(msg.contains("unknown field `ports`"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: postgres:16\n  env: {RAIBID_X: 1}\n");
        assert!(msg.contains("RAIBID_"), "{msg}");
        for name in ["-db", "db-", "1db", "", &"a".repeat(64)] {
            assert!(service_name(name).is_err(), "{name:?}");
        }
        for name in ["db", "redis-cache", "pg16", &"a".repeat(63)] {
            assert!(service_name(name).is_ok(), "{name:?}");
        }
        let many: String = (0..=MAX_SERVICES)
            .map(|i| format!("- name: s{i}\n  image: busybox\n"))
            .collect();
        let (_, _, msg) = error_at(&many);
        assert!(msg.contains("at most 8"), "{msg}");
    }
}
