//! A step's environment as a shell script that the step's own shell sources.
//!
//! Variables handed to a program through its environment act on that program too: the dynamic
//! loader reads `LD_PRELOAD`, `LD_AUDIT`, `GCONV_PATH` and more. The pipeline chooses the names,
//! so nothing that runs before the step (bwrap, `setpriv` while it is still root) may see them:
//! those get a fixed environment, and the step's shell reads its variables from this file
//! first. The file is private to the agent on the host (a 0700 directory) and bound read-only
//! into the sandbox, where the step's own user may read what is its own anyway.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::ExecError;

/// What the processes before the step get instead of its environment.
pub(crate) const FIXED_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) struct EnvScript {
    dir: tempfile::TempDir,
}

impl EnvScript {
    /// In `private` (see [`StepSpec::private`](super::StepSpec::private)).
    pub(crate) fn write(
        env: &BTreeMap<String, String>,
        private: Option<&Path>,
    ) -> Result<Self, ExecError> {
        let dir = crate::private_dir::private_tempdir("raibid-step-env-", private)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            // Readable by the step user inside the sandbox; the directory keeps others out.
            .mode(0o644)
            .open(dir.path().join("env"))?;
        let mut script = String::new();
        for (name, value) in env {
            if !is_shell_name(name) {
                return Err(ExecError::Spawn(format!(
                    "invalid environment variable name {name:?}: use letters, digits and _"
                )));
            }
            if value.contains('\0') {
                return Err(ExecError::Spawn(format!(
                    "environment variable {name} contains a NUL byte"
                )));
            }
            if SHELL_READONLY.contains(&name.as_str()) {
                // `command` takes away `export`'s power to end the shell when the name is
                // read-only, `|| :` the failure's under `-e`: dash exports the value, as it
                // would from the environment, bash keeps its own.
                script.push_str(&format!(
                    "command export {name}={} 2>/dev/null || :\n",
                    quote(value)
                ));
            } else {
                script.push_str(&format!("export {name}={}\n", quote(value)));
            }
        }
        file.write_all(script.as_bytes())?;
        Ok(Self { dir })
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("env")
    }
}

/// Variables bash makes read-only in every shell (`bash --posix -c 'readonly -p'`). Where
/// /bin/sh is bash (Fedora, RHEL, Arch) it runs in POSIX mode, and there assigning one with
/// `export`, a special builtin, ends the shell: the whole step would fail before it starts.
/// From the environment (host and container executors) bash takes them without a word, so
/// neither may the script. dash has none.
pub(crate) const SHELL_READONLY: &[&str] = &[
    "BASHOPTS",
    "BASH_VERSINFO",
    "EUID",
    "PPID",
    "SHELLOPTS",
    "UID",
];

/// The script run by `sh -c`: the variables first, on the script's first line so that the
/// shell's line numbers in error messages stay those of the pipeline file's script.
pub(crate) fn sourced_first(env_file: &str, script: &str) -> String {
    format!(". {env_file}; {script}")
}

/// A name a POSIX shell can assign: letters, digits and `_`, not starting with a digit.
pub(crate) fn is_shell_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Single quotes keep every byte but `'` itself literal; that one closes, escapes and reopens.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_exactly() {
        let tricky = [
            ("PLAIN", "value"),
            ("EMPTY", ""),
            ("QUOTES", "it's \"quoted\" ''"),
            ("EXPANSIONS", "$HOME $(touch /tmp/no) `id` ${X:-y} \\n \\"),
            ("LINES", "one\ntwo\n\n"),
            ("LD_PRELOAD", "/evil.so"),
        ];
        let env: BTreeMap<String, String> = tricky
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let file = EnvScript::write(&env, None).unwrap();
        let mode = |p: &std::path::Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(file.dir.path()), 0o700);
        let mut script = String::new();
        for (k, _) in &tricky {
            script.push_str(&format!("printf '%s\\0' \"${k}\"; "));
        }
        let out = std::process::Command::new("/bin/sh")
            .args([
                "-e",
                "-c",
                &sourced_first(&file.path().display().to_string(), &script),
            ])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let got: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        for (i, (k, v)) in tricky.iter().enumerate() {
            assert_eq!(got[i], v.as_bytes(), "{k}");
        }
    }

    /// Where /bin/sh is bash, a pipeline variable named like one of bash's read-only ones
    /// ended the sourced file, and so every step; dash still gets the value.
    #[test]
    fn names_bash_keeps_read_only_do_not_end_the_step() {
        let mut env: BTreeMap<String, String> = SHELL_READONLY
            .iter()
            .map(|k| (k.to_string(), "5".to_string()))
            .collect();
        env.insert("AFTER".into(), "still set".into());
        let file = EnvScript::write(&env, None).unwrap();
        let path = file.path().display().to_string();
        let run = |shell: &[&str], script: &str| {
            std::process::Command::new(shell[0])
                .args(&shell[1..])
                .args(["-e", "-c", &sourced_first(&path, script)])
                .env_clear()
                .output()
        };
        let out = run(&["bash", "--posix"], "true").unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = run(&["bash", "--posix"], r#"printf '%s' "$AFTER""#).unwrap();
        assert_eq!(out.stdout, b"still set", "{out:?}");
        assert!(out.stderr.is_empty(), "{out:?}");
        // Debian's /bin/sh; elsewhere it may not be installed.
        if let Ok(out) = run(&["dash"], r#"printf '%s %s' "$UID" "$AFTER""#) {
            assert_eq!(out.stdout, b"5 still set", "{out:?}");
        }
    }

    #[test]
    fn names_a_shell_cannot_assign_are_refused() {
        for bad in ["A-B", "1A", "", "A B", "A=B"] {
            let env = BTreeMap::from([(bad.to_string(), "x".to_string())]);
            assert!(EnvScript::write(&env, None).is_err(), "{bad:?}");
        }
    }
}
