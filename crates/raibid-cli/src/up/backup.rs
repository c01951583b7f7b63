//! `raibid backup` and `raibid restore`: a copy of everything raibid keeps in Redis (jobs,
//! logs, repository secrets (sealed), schedules' runs, pipeline numbers, sessions), and putting
//! one back under `raibid up`.
//!
//! The copy is Redis's own RDB file, taken as a replica takes it (`redis-cli --rdb`, Redis's
//! `SYNC`): a consistent point in time however busy the queue is, from any Redis raibid can
//! reach, without stopping anything. `raibid up`'s Redis is found through its data directory:
//! the address it wrote there while it runs, or, while it is stopped, its AOF, read by a
//! redis-server of the backup's own.
//!
//! A restore is for `raibid up` (stopped): its AOF is put aside, a redis-server loads the
//! backup and writes a new AOF from it, which `raibid up` starts from. A Redis of one's own
//! (Kubernetes) is restored as Redis documents it: its RDB file in place of its data, loaded
//! with the AOF off, then `CONFIG SET appendonly yes`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use raibid_config::Config;

use super::{credentials, explicit_redis_url, lock_data_dir};
use crate::cli::{BackupArgs, Global, RestoreArgs};
use crate::local_redis::{Durability, LocalRedis, which};

/// The file `raibid up` writes its Redis's address to while it runs (0600: the password is in
/// it), for `raibid backup`.
pub(super) const REDIS_URL_FILE: &str = "redis-url";

/// What every RDB file starts with.
const RDB_MAGIC: &[u8] = b"REDIS";

pub async fn backup(
    global: &Global,
    config: &Config,
    args: BackupArgs,
) -> anyhow::Result<ExitCode> {
    let output = args.output.unwrap_or_else(|| {
        PathBuf::from(format!(
            "raibid-backup-{}.rdb",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ))
    });
    let url = args.redis_url.clone().or_else(|| {
        args.data_dir
            .is_none()
            .then(|| explicit_redis_url(global))
            .flatten()
    });
    let from = match url {
        Some(url) => {
            snapshot(&url, &output).await?;
            raibid_config::redact_url(&url)
        }
        None => {
            let data_dir = args
                .data_dir
                .unwrap_or_else(|| crate::commands::data_home(config));
            let data_dir = data_dir.canonicalize().with_context(|| {
                format!("no raibid up data directory at {}", data_dir.display())
            })?;
            backup_up(&data_dir, &output).await?
        }
    };
    let size = std::fs::metadata(&output)?.len();
    println!(
        "backed up {from} to {} ({size} bytes)\n\
         It holds every job, log, session and repository secret; the secrets sealed with \
         redis.secrets_key (raibid up: its data directory's secrets-key), which a restore \
         needs as well: keep the two apart, both private.",
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `raibid up`'s Redis: the one running, or its AOF read by a redis-server of our own.
async fn backup_up(data_dir: &Path, output: &Path) -> anyhow::Result<String> {
    let Ok(lock) = lock_data_dir(data_dir) else {
        let url = std::fs::read_to_string(data_dir.join(REDIS_URL_FILE)).with_context(|| {
            format!(
                "raibid up is running on {} but its Redis's address is not there (it uses a \
                 Redis of its own: back that up with --redis-url)",
                data_dir.display()
            )
        })?;
        snapshot(url.trim(), output).await?;
        return Ok(format!(
            "the Redis of the raibid up running on {}",
            data_dir.display()
        ));
    };
    let redis_dir = data_dir.join("redis");
    anyhow::ensure!(
        redis_dir.join("appendonlydir").is_dir(),
        "{} holds no Redis data of raibid up",
        data_dir.display()
    );
    let password = std::fs::read_to_string(data_dir.join("redis-password"))
        .context("reading raibid up's redis-password")?;
    let redis = LocalRedis::start(
        &redis_dir,
        None,
        Durability::Aof,
        Some(password.trim()),
        None,
    )
    .await?;
    let result = snapshot(&redis.url(), output).await;
    redis.stop().await;
    drop(lock);
    result?;
    Ok(format!("raibid up's Redis data in {}", data_dir.display()))
}

/// The RDB of the Redis at `url`, written to `output` (0600) once whole.
async fn snapshot(url: &str, output: &Path) -> anyhow::Result<()> {
    let redis_cli = which("redis-cli").context(
        "redis-cli is not installed: run `sudo apt-get install -y redis-tools` (redis-server \
         brings it)",
    )?;
    // redis-rs's spelling of a certificate left unchecked is redis-cli's `--insecure`.
    let (url, insecure) = match url.strip_suffix("#insecure") {
        Some(url) => (url, true),
        None => (url, false),
    };
    let (url, password) = without_password(url)?;
    let partial = output.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    // redis-cli creates the file; one made private first keeps its mode.
    crate::private_files::write(&partial, "")?;
    let mut command = tokio::process::Command::new(redis_cli);
    command
        .arg("-u")
        .arg(&url)
        .arg("--no-auth-warning")
        .args(insecure.then_some("--insecure"))
        .arg("--rdb")
        .arg(&partial)
        .env_remove("REDISCLI_AUTH")
        .kill_on_drop(true);
    // The password through the environment: a command line is readable by every user.
    if let Some(password) = password {
        command.env("REDISCLI_AUTH", password);
    }
    let out = command.output().await.context("running redis-cli --rdb")?;
    let taken = out.status.success() && starts_as_rdb(&partial);
    if !taken {
        let _ = std::fs::remove_file(&partial);
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let said = if said.is_empty() {
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        } else {
            said
        };
        anyhow::bail!(
            "no copy of {}: redis-cli --rdb: {said}",
            raibid_config::redact_url(&url)
        );
    }
    std::fs::rename(&partial, output).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

fn starts_as_rdb(path: &Path) -> bool {
    let mut magic = [0; 5];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == RDB_MAGIC
}

/// The URL without its password, and the password (percent-decoded), which redis-cli takes
/// from `REDISCLI_AUTH` when the URL has none.
fn without_password(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "redis" | "rediss"))
        .with_context(|| {
            format!(
                "{} is not a redis:// or rediss:// URL",
                raibid_config::redact_url(url)
            )
        })?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return Ok((url.to_owned(), None));
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(percent_decode(password)?)),
        None => (userinfo, None),
    };
    let bare = if user.is_empty() {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{user}@{host}{path}")
    };
    Ok((bare, password.filter(|p| !p.is_empty())))
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .context("the Redis URL's password has a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the Redis URL's password is not UTF-8")
}

pub async fn restore(config: &Config, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        starts_as_rdb(&args.file),
        "{} is not a Redis RDB file (what raibid backup writes)",
        args.file.display()
    );
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| crate::commands::data_home(config));
    crate::private_files::ensure_dir(&data_dir)?;
    let data_dir = data_dir.canonicalize()?;
    let _lock = lock_data_dir(&data_dir)
        .context("stop raibid up first: a restore replaces the data its Redis runs on")?;
    let redis_dir = data_dir.join("redis");
    crate::private_files::ensure_dir(&redis_dir)?;
    let password = credentials::load_or_create(&data_dir.join("redis-password"))?;
    // Put aside, never deleted here: the restore may be of the wrong file.
    let current = redis_dir.join("appendonlydir");
    let aside = redis_dir.join(format!(
        "appendonlydir.before-restore-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    let had_data = current.exists();
    if had_data {
        std::fs::rename(&current, &aside)
            .with_context(|| format!("putting {} aside", current.display()))?;
    }
    const RDB: &str = "restore.rdb";
    let rdb = redis_dir.join(RDB);
    std::fs::copy(&args.file, &rdb).with_context(|| format!("copying {}", args.file.display()))?;
    crate::private_files::restrict_tree(&redis_dir)?;
    let written = async {
        let mut redis = LocalRedis::start_from_rdb(&redis_dir, RDB, &password).await?;
        let switched = redis.switch_to_aof().await;
        redis.stop().await;
        switched
    }
    .await;
    let _ = std::fs::remove_file(&rdb);
    if let Err(e) = written {
        // As it was: the data raibid up had, not a half-written AOF.
        let _ = std::fs::remove_dir_all(&current);
        if had_data {
            let _ = std::fs::rename(&aside, &current);
        }
        return Err(e.context("restoring the backup"));
    }
    println!(
        "restored {} into {}",
        args.file.display(),
        data_dir.display()
    );
    if had_data {
        println!(
            "The data it held is in {}: delete it once raibid up runs as it should.",
            aside.display()
        );
    }
    println!(
        "Repository secrets need the secrets-key the backup was made with, in {}.",
        data_dir.join("secrets-key").display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url_for_the_environment() {
        assert_eq!(
            without_password("redis://:s%40cret@127.0.0.1:6379/2").unwrap(),
            ("redis://127.0.0.1:6379/2".into(), Some("s@cret".into()))
        );
        assert_eq!(
            without_password("rediss://ci:pw@redis.example:6380").unwrap(),
            ("rediss://ci@redis.example:6380".into(), Some("pw".into()))
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379/").unwrap(),
            ("redis://127.0.0.1:6379/".into(), None)
        );
        assert!(without_password("http://x").is_err());
        assert!(without_password("redis://:%zz@h").is_err());
    }
}
