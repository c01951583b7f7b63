//! `services:`: containers that run beside a job's steps (a database, a cache), reachable from
//! every step by their name, as in Woodpecker and GitLab CI.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::de::{CheckedMap, StepEnv, checked_str};
use crate::duration::Timeout;
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
    /// Variables given a secret's value (`env: { VAR: { from_secret: NAME } }`), as a step's.
    pub secret_env: BTreeMap<String, String>,
    /// Replaces the image's default command (`CMD`); empty: the image's own.
    pub command: Vec<String>,
    /// Replaces the image's `ENTRYPOINT`; `command` (never the image's `CMD`) follows it, as
    /// docker and GitLab do. Empty: the image's own.
    pub entrypoint: Vec<String>,
    /// How the agent knows the service is up before the first step runs; `None`: it is not
    /// waited for (a step may find it still starting, as in Woodpecker).
    pub ready: Option<Ready>,
}

/// A service's readiness check, docker compose's `healthcheck` with `service_healthy`: a
/// database accepts connections seconds after its container starts, and a step that connects
/// sooner fails for no fault of the code under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// What runs inside the service's container, again and again, until it exits 0.
    pub run: ReadyRun,
    /// How long new tries are started before the job ends in `error` (the agent lets a try
    /// under way then finish, within its own time limit).
    pub timeout: Duration,
}

/// A readiness check's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyRun {
    /// Shell commands, run by the image's `/bin/sh -c`: `pg_isready -U postgres`.
    Shell(String),
    /// A program and its arguments, run as they are, without a shell (docker compose's
    /// `["CMD", ...]`): for images that have none, distroless ones.
    Exec(Vec<String>),
}

impl ReadyRun {
    /// What runs after `<engine> exec <container>`: one argument each, never through a
    /// shell of the agent's.
    pub fn argv(&self) -> Vec<&str> {
        match self {
            Self::Shell(script) => vec!["/bin/sh", "-c", script],
            Self::Exec(args) => args.iter().map(String::as_str).collect(),
        }
    }
}

/// As the log and `raibid pipeline check` name it: the commands, or the arguments with those
/// that are empty or hold blanks or quotes quoted.
impl fmt::Display for ReadyRun {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Shell(script) => f.write_str(script.trim()),
            Self::Exec(args) => {
                let shown: Vec<String> = args
                    .iter()
                    .map(|a| {
                        if a.is_empty()
                            || a.contains(|c: char| c.is_whitespace() || "'\"\\".contains(c))
                        {
                            format!("{a:?}")
                        } else {
                            a.clone()
                        }
                    })
                    .collect();
                f.write_str(&shown.join(" "))
            }
        }
    }
}

/// Long enough for a database to initialise its files on a slow disk.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

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

/// `command` or `entrypoint` (`key`): a non-empty list of arguments.
fn arguments(key: &str, args: Vec<String>) -> Result<Vec<String>, String> {
    if args.is_empty() {
        return Err(format!(
            "`{key}` is empty; leave it out to run the image's own"
        ));
    }
    if args.len() > MAX_COMMAND_ARGS {
        return Err(format!(
            "`{key}` has {} arguments; at most {MAX_COMMAND_ARGS}",
            args.len()
        ));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(format!("`{key}` may not contain a NUL character"));
    }
    if key != "command" && args[0].is_empty() {
        return Err(format!(
            "`{key}` starts with the program to run; it is empty"
        ));
    }
    Ok(args)
}

checked_str!(ServiceName: String, "a service name like postgres", service_name);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<ServiceName>,
    image: Option<ImageRef>,
    /// `environment` is Woodpecker's spelling.
    #[serde(alias = "environment")]
    env: Option<StepEnv>,
    #[serde(default, deserialize_with = "crate::step::secrets")]
    secrets: Vec<String>,
    command: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    ready: Option<ReadyDe>,
    /// Woodpecker's `ports`, which its Kubernetes backend needs to expose a service: here
    /// steps reach every port of a service by its name on the job's network, so they are
    /// only checked.
    #[serde(default, deserialize_with = "ports")]
    #[allow(dead_code)]
    ports: (),
}

/// `ports: [5432, "6379/tcp"]`: port numbers, with `/tcp` or `/udp` if given.
fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    crate::de::OneOrMany::new(
        "a port number or a list of them, like [5432] or [\"6379/tcp\"]",
        "an empty list; remove `ports`",
        |port: &str| {
            let number = port
                .strip_suffix("/tcp")
                .or_else(|| port.strip_suffix("/udp"))
                .unwrap_or(port);
            match number.parse::<u16>() {
                Ok(n) if n > 0 => Ok(()),
                _ => Err(format!(
                    "{port:?} is not a port: a number from 1 to 65535, with /tcp or /udp if given"
                )),
            }
        },
    )
    .deserialize(d)
    .map(|_: Vec<()>| ())
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
        let args = |key: &str, given: Option<Vec<String>>| match given {
            Some(args) => arguments(key, args).map_err(|e| format!("service {name:?}: {e}")),
            None => Ok(Vec::new()),
        };
        let command = args("command", self.command)?;
        let entrypoint = args("entrypoint", self.entrypoint)?;
        let (env, secret_env) = self.env.map(StepEnv::split).unwrap_or_default();
        Ok(Service {
            name,
            image,
            env,
            secrets: self.secrets,
            secret_env,
            command,
            entrypoint,
            ready: self.ready.map(|r| r.0),
        })
    }
}

/// `ready:` as written: the commands alone (a shell's line, or a program and its arguments),
/// or a mapping with `run` and `timeout`.
struct ReadyDe(Ready);

impl<'de> Deserialize<'de> for ReadyDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ReadyVisitor).map(ReadyDe)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    run: Option<RunDe>,
    timeout: Option<Timeout>,
}

/// `ready`'s `run`: shell commands, or a list of a program and its arguments.
struct RunDe(ReadyRun);

impl<'de> Deserialize<'de> for RunDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RunVisitor;
        impl<'de> Visitor<'de> for RunVisitor {
            type Value = ReadyRun;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "the commands that succeed once the service is up (like `pg_isready -U \
                     postgres`), or a program and its arguments (like [pg_isready, -U, postgres])",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReadyRun, E> {
                ready_script(v).map(ReadyRun::Shell).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ReadyRun, A::Error> {
                ready_exec(seq)
            }
        }
        d.deserialize_any(RunVisitor).map(RunDe)
    }
}

/// `ready: [program, args...]`. Docker compose's healthcheck forms are taken as written
/// there: `[CMD, program, args...]`, and `[CMD-SHELL, commands]` for shell commands.
fn ready_exec<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<ReadyRun, A::Error> {
    let mut args: Vec<String> = Vec::new();
    while let Some(arg) = seq.next_element::<String>()? {
        args.push(arg);
    }
    let custom = |message: String| <A::Error as de::Error>::custom(message);
    match args.first().map(String::as_str) {
        Some("CMD") => {
            args.remove(0);
        }
        Some("CMD-SHELL") => {
            return match args.as_slice() {
                [_, script] => ready_script(script).map(ReadyRun::Shell).map_err(custom),
                _ => Err(custom(
                    "`[CMD-SHELL, ...]` takes one string, the shell's commands".to_owned(),
                )),
            };
        }
        _ => {}
    }
    if args.is_empty() {
        return Err(custom(
            "`ready` is empty; give the program that succeeds once the service is up, or \
             leave it out"
                .to_owned(),
        ));
    }
    arguments("ready", args).map(ReadyRun::Exec).map_err(custom)
}

struct ReadyVisitor;

impl<'de> Visitor<'de> for ReadyVisitor {
    type Value = Ready;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a readiness check: the commands that succeed once the service is up (like \
             `pg_isready -U postgres`), a program and its arguments (like [pg_isready, -U, \
             postgres]), or a mapping with `run` and `timeout`",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Ready, E> {
        Ok(Ready {
            run: ReadyRun::Shell(ready_script(v).map_err(E::custom)?),
            timeout: DEFAULT_READY_TIMEOUT,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Ready, A::Error> {
        Ok(Ready {
            run: ready_exec(seq)?,
            timeout: DEFAULT_READY_TIMEOUT,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Ready, A::Error> {
        let raw = RawReady::deserialize(MapAccessDeserializer::new(map))?;
        let Some(RunDe(run)) = raw.run else {
            return Err(de::Error::custom(
                "`ready` needs `run`: the commands that succeed once the service is up",
            ));
        };
        Ok(Ready {
            run,
            timeout: raw.timeout.map_or(DEFAULT_READY_TIMEOUT, |t| t.0),
        })
    }
}

fn ready_script(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err(
            "`ready` is empty; give the commands that succeed once the service is up, \
                    or leave it out"
                .to_owned(),
        );
    }
    if s.contains('\0') {
        return Err("`ready` may not contain a NUL character".to_owned());
    }
    Ok(s.to_owned())
}

/// `services:` as written in YAML: a list of services with unique names.
pub(crate) struct Services(pub(crate) Vec<Service>);

impl<'de> Deserialize<'de> for Services {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ServicesVisitor)
    }
}

struct ServicesVisitor;

/// One more service, in either form, within [`MAX_SERVICES`]; `taken` holds the names so far.
fn add<E: de::Error>(
    services: &mut Vec<Service>,
    taken: &mut BTreeSet<String>,
    service: Service,
) -> Result<(), E> {
    if services.len() == MAX_SERVICES {
        return Err(E::custom(format!(
            "more than {MAX_SERVICES} services; a job may have at most {MAX_SERVICES}"
        )));
    }
    taken.insert(service.name.clone());
    services.push(service);
    Ok(())
}

impl<'de> Visitor<'de> for ServicesVisitor {
    type Value = Services;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a list of services, each starting with `- name:` (or a mapping of service names \
             to services)",
        )
    }

    /// Woodpecker 2's form, `services: { db: { image: postgres:16 } }`: each key is a
    /// service's name, in the order written.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Services, A::Error> {
        let mut services = Vec::new();
        let mut taken = BTreeSet::new();
        while let Some(name) = map.next_key_seed(crate::de::StrCheck::new(
            "a service name like postgres",
            service_name,
        ))? {
            let service = map.next_value_seed(CheckedMap::new(
                "a service: a mapping with `image`, under its name (or a list of services, \
                 each starting with `- name:`)",
                |mut raw: RawService| {
                    if raw.name.is_some() {
                        return Err(format!(
                            "service {name:?}: its name is its key here; remove `name`"
                        ));
                    }
                    raw.name = Some(ServiceName(name.clone()));
                    raw.into_service(&taken)
                },
            ))?;
            add(&mut services, &mut taken, service)?;
        }
        Ok(Services(services))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Services, A::Error> {
        let mut services = Vec::new();
        let mut taken = BTreeSet::new();
        while let Some(service) = seq.next_element_seed(CheckedMap::new(
            "a service: a mapping with `name` and `image`",
            |raw: RawService| raw.into_service(&taken),
        ))? {
            add(&mut services, &mut taken, service)?;
        }
        Ok(Services(services))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(yaml: &str) -> Result<Vec<Service>, serde_yaml::Error> {
        crate::de::with_from_secret_vars(yaml, || serde_yaml::from_str::<Services>(yaml))
            .map(|s| s.0)
    }

    /// Woodpecker 2's mapping of names to services, with its `ports` (checked, not needed).
    #[test]
    fn services_may_be_a_mapping_of_names_as_in_woodpecker() {
        let s = services(
            "database:\n  image: mysql:8\n  environment:\n    MYSQL_ROOT_PASSWORD: example\n  \
             ports: [3306]\ncache:\n  image: redis:7\n  ports: [\"6379/tcp\"]\n",
        )
        .unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["database", "cache"]);
        assert_eq!(s[0].image, "mysql:8");
        assert_eq!(s[0].env["MYSQL_ROOT_PASSWORD"], "example");
        for (yaml, says) in [
            ("db:\n  name: db\n  image: x\n", "its name is its key here"),
            ("Db:\n  image: x\n", "service name"),
            ("db:\n  image: x\n  ports: [\"80/sctp\"]\n", "is not a port"),
            (
                "db:\n  image: x\n  ports: []\n",
                "an empty list; remove `ports`",
            ),
        ] {
            let err = services(yaml).unwrap_err().to_string();
            assert!(err.contains(says), "{yaml:?}: {err}");
        }
    }

    fn error_at(yaml: &str) -> (usize, usize, String) {
        let err = services(yaml).unwrap_err();
        let loc = err.location().expect("error has a location");
        (loc.line(), loc.column(), err.to_string())
    }

    /// Woodpecker's spelling, with a secret under a name of the service's own.
    #[test]
    fn a_service_takes_environment_with_from_secret() {
        let s = services(
            "- name: db\n  image: postgres:16\n  environment:\n    POSTGRES_USER: ci\n    \
             POSTGRES_PASSWORD:\n      from_secret: db_password\n",
        )
        .unwrap();
        assert_eq!(s[0].env["POSTGRES_USER"], "ci");
        assert_eq!(s[0].secret_env["POSTGRES_PASSWORD"], "db_password");
    }

    #[test]
    fn a_service_with_everything() {
        let s = services(
            "- name: db\n  image: postgres:16\n  env: {POSTGRES_PASSWORD: test}\n  secrets: [LICENSE_KEY]\n  command: [postgres, -c, fsync=off]\n  entrypoint: [docker-entrypoint.sh]\n- name: cache\n  image: redis:7\n",
        )
        .unwrap();
        assert_eq!(
            s[0],
            Service {
                name: "db".into(),
                image: "postgres:16".into(),
                env: BTreeMap::from([("POSTGRES_PASSWORD".into(), "test".into())]),
                secrets: vec!["LICENSE_KEY".into()],
                secret_env: BTreeMap::new(),
                command: vec!["postgres".into(), "-c".into(), "fsync=off".into()],
                entrypoint: vec!["docker-entrypoint.sh".into()],
                ready: None,
            }
        );
        assert_eq!(s[1].name, "cache");
        assert!(s[1].command.is_empty() && s[1].env.is_empty() && s[1].secrets.is_empty());
        assert_eq!(services("[]").unwrap(), []);
    }

    #[test]
    fn readiness_is_a_command_or_a_mapping() {
        let s = services(
            "- name: db\n  image: postgres:16\n  ready: pg_isready -U postgres\n- name: cache\n  image: redis:7\n  ready:\n    run: redis-cli ping\n    timeout: 2m\n",
        )
        .unwrap();
        assert_eq!(
            s[0].ready,
            Some(Ready {
                run: ReadyRun::Shell("pg_isready -U postgres".into()),
                timeout: DEFAULT_READY_TIMEOUT,
            })
        );
        assert_eq!(
            s[1].ready,
            Some(Ready {
                run: ReadyRun::Shell("redis-cli ping".into()),
                timeout: Duration::from_secs(120),
            })
        );
    }

    /// A program and its arguments run without a shell, for an image that has none; docker
    /// compose's `CMD` and `CMD-SHELL` forms as compose reads them.
    #[test]
    fn readiness_may_be_a_program_and_its_arguments() {
        let ready = |yaml: &str| {
            services(&format!("- name: db\n  image: pg\n  ready: {yaml}\n"))
                .unwrap()
                .remove(0)
                .ready
                .unwrap()
        };
        let exec = |args: &[&str]| ReadyRun::Exec(args.iter().map(|a| a.to_string()).collect());
        let pg = exec(&["pg_isready", "-U", "postgres"]);
        assert_eq!(ready("[pg_isready, -U, postgres]").run, pg);
        assert_eq!(ready("[CMD, pg_isready, -U, postgres]").run, pg);
        assert_eq!(
            ready("{run: [pg_isready, -U, postgres], timeout: 5s}"),
            Ready {
                run: pg.clone(),
                timeout: Duration::from_secs(5)
            }
        );
        assert_eq!(
            ready("[CMD-SHELL, pg_isready || exit 1]").run,
            ReadyRun::Shell("pg_isready || exit 1".into())
        );
        assert_eq!(pg.argv(), ["pg_isready", "-U", "postgres"]);
        assert_eq!(
            ReadyRun::Shell("redis-cli ping".into()).argv(),
            ["/bin/sh", "-c", "redis-cli ping"]
        );
        assert_eq!(
            exec(&["/ko-app/probe", "--url", "http://db/ready it", ""]).to_string(),
            "/ko-app/probe --url \"http://db/ready it\" \"\""
        );
        assert_eq!(
            ReadyRun::Shell("  redis-cli ping\n".into()).to_string(),
            "redis-cli ping"
        );
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
        let (_, _, msg) = error_at("- name: db\n  image: postgres:16\n  entrypoint: []\n");
        assert!(msg.contains("`entrypoint` is empty"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: postgres:16\n  entrypoint: ['']\n");
        assert!(msg.contains("starts with the program"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: postgres:16\n  ports: [0]\n");
        assert!(msg.contains("\"0\" is not a port"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: postgres:16\n  env: {RAIBID_X: 1}\n");
        assert!(msg.contains("RAIBID_"), "{msg}");
        for name in ["-db", "db-", "1db", "", &"a".repeat(64)] {
            assert!(service_name(name).is_err(), "{name:?}");
        }
        for name in ["db", "redis-cache", "pg16", &"a".repeat(63)] {
            assert!(service_name(name).is_ok(), "{name:?}");
        }
        let (line, col, msg) = error_at("- name: db\n  image: postgres:16\n  ready: \"  \"\n");
        assert_eq!((line, col), (3, 10));
        assert!(msg.contains("`ready` is empty"), "{msg}");
        let (line, _, msg) = error_at("- name: db\n  image: pg\n  ready:\n    timeout: 10s\n");
        assert_eq!(line, 4);
        assert!(msg.contains("`ready` needs `run`"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: pg\n  ready: {run: x, interval: 1s}\n");
        assert!(msg.contains("unknown field `interval`"), "{msg}");
        let (line, col, msg) = error_at("- name: db\n  image: pg\n  ready: {run: x, timeout: 0}\n");
        assert_eq!((line, col), (3, 28));
        assert!(msg.contains("zero"), "{msg}");
        let (line, col, msg) = error_at("- name: db\n  image: pg\n  ready: []\n");
        assert_eq!((line, col), (3, 10));
        assert!(msg.contains("`ready` is empty"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: pg\n  ready: [CMD]\n");
        assert!(msg.contains("`ready` is empty"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: pg\n  ready: ['', x]\n");
        assert!(msg.contains("starts with the program"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: pg\n  ready: [CMD-SHELL, a, b]\n");
        assert!(msg.contains("takes one string"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: pg\n  ready: {run: []}\n");
        assert!(msg.contains("`ready` is empty"), "{msg}");
        let (_, _, msg) = error_at("- name: db\n  image: pg\n  ready: 5\n");
        assert!(msg.contains("a readiness check"), "{msg}");
        let many: String = (0..=MAX_SERVICES)
            .map(|i| format!("- name: s{i}\n  image: busybox\n"))
            .collect();
        let (_, _, msg) = error_at(&many);
        assert!(msg.contains("at most 8"), "{msg}");
    }
}
