//! Running host-executor steps under an account of their own (`agent.step_user`).
//!
//! An agent pod runs as root (buildah needs it) and its steps share the pod. Under root, a step
//! could write the node's shared git-mirror volume (poisoning later checkouts of any
//! repository) and read whatever the agent later starts (a `git` or `buildah` child carries the
//! forge or registry token in its environment and is dumpable again after `exec`). A separate
//! unprivileged uid closes both: it owns only the job's workspace and `HOME`, it can read the
//! mirror objects its checkout borrows but write none of them, and it can neither signal nor
//! inspect root's processes.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The uid and gid a step runs as; supplementary groups are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUser {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StepUserError {
    #[error(
        "agent.step_user {0:?}: expected UID, UID:GID or the name of an account on this machine"
    )]
    Invalid(String),
    #[error("agent.step_user {0:?}: no such account on this machine (a number works without one)")]
    UnknownUser(String),
    #[error("agent.step_user {0:?}: uid 0 is root, which is what a step user is there to avoid")]
    Root(String),
    #[error(
        "agent.step_user needs the agent to run as root (it is uid {0}): only root can start \
         steps as another user"
    )]
    AgentNotRoot(u32),
    #[error(
        "agent.step_user {user} cannot enter {dir}: steps would find neither their workspace nor \
         the git objects it borrows. Make {dir} and every directory above it searchable by that \
         user (e.g. chmod o+x)"
    )]
    Unreachable { user: String, dir: PathBuf },
    #[error(
        "{0} is a shared directory anyone may create entries in; with agent.step_user the \
         agent's workspaces and mirrors need a directory of their own"
    )]
    SharedRoot(PathBuf),
    #[error(
        "another raibid agent on this machine runs host steps as uid {uid} ({} is locked): \
         steps of two agents under one uid would kill each other's processes and could \
         read each other's secrets. Give each agent its own agent.step_user, use the bwrap \
         executor, or run one agent (`raibid up`: up.max_agents: 1)",
        path.display()
    )]
    Taken { uid: u32, path: PathBuf },
    #[error("checking what agent.step_user can reach: {0}")]
    Io(#[from] io::Error),
}

impl StepUser {
    /// Makes this process the only one on the machine running host steps as this user, for as
    /// long as it lives (the lock is never let go: the kernel drops it when the process exits,
    /// however it exits). After each step every process of the step user is killed, and
    /// concurrent jobs under one uid could read each other's secrets: one agent's concurrency
    /// check cannot see other agent processes (the agents `raibid up` starts, two services).
    /// `dir` must be writable by root alone, so that no step can take or remove the lock.
    pub fn hold_for_process(&self, dir: &Path) -> Result<(), StepUserError> {
        use nix::fcntl::{Flock, FlockArg};
        let path = dir.join(format!("raibid-step-user-{}.lock", self.uid));
        let file = crate::lock_file::open(&path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                std::mem::forget(lock);
                Ok(())
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StepUserError::Taken {
                uid: self.uid,
                path,
            }),
            Err((_, errno)) => Err(io::Error::from(errno).into()),
        }
    }

    /// `UID`, `UID:GID` or an account name (with its primary group). A bare number is its own
    /// gid too: the number usually has no account in the image, hence no primary group.
    pub fn parse(text: &str) -> Result<Self, StepUserError> {
        let text = text.trim();
        let invalid = || StepUserError::Invalid(text.to_owned());
        let user = match text.split_once(':') {
            Some((uid, gid)) => Self {
                uid: uid.parse().map_err(|_| invalid())?,
                gid: gid.parse().map_err(|_| invalid())?,
            },
            None if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() => {
                let uid = text.parse().map_err(|_| invalid())?;
                Self { uid, gid: uid }
            }
            None => {
                if text.is_empty() || text.contains(['/', '\0']) {
                    return Err(invalid());
                }
                let account = nix::unistd::User::from_name(text)
                    .map_err(|_| StepUserError::UnknownUser(text.to_owned()))?
                    .ok_or_else(|| StepUserError::UnknownUser(text.to_owned()))?;
                Self {
                    uid: account.uid.as_raw(),
                    gid: account.gid.as_raw(),
                }
            }
        };
        if user.uid == 0 {
            return Err(StepUserError::Root(text.to_owned()));
        }
        // (uid_t)-1 means "leave unchanged" to setresuid and setpriv: the step would stay root.
        if user.uid == u32::MAX || user.gid == u32::MAX {
            return Err(invalid());
        }
        Ok(user)
    }

    /// Refuses to start an agent whose steps could not work: the agent must be root, and the
    /// step user must be able to enter each of `dirs` (the workspace root, the mirror cache).
    /// The check runs a shell as that user, so permissions, ACLs and mount options all count.
    pub fn check(&self, dirs: &[&Path]) -> Result<(), StepUserError> {
        let me = nix::unistd::geteuid();
        if !me.is_root() {
            return Err(StepUserError::AgentNotRoot(me.as_raw()));
        }
        for dir in dirs {
            // The path is an argument of the script, never part of it.
            let entered = std::process::Command::new("/bin/sh")
                .args(["-c", "cd -- \"$1\"", "sh"])
                .arg(dir)
                .env_clear()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .uid(self.uid)
                .gid(self.gid)
                .status()?;
            if !entered.success() {
                return Err(StepUserError::Unreachable {
                    user: self.to_string(),
                    dir: dir.to_path_buf(),
                });
            }
        }
        Ok(())
    }

    /// Takes group and world write permission from a directory the agent keeps its job
    /// directories or mirrors in: a step user needs only to pass through it, and one who could
    /// create entries there could plant a mirror, a lock, or a job directory of a later job
    /// (its own, to be given to it by path), or move its own aside for a link. A pod's
    /// `emptyDir` is 0777. A shared sticky directory such as `/tmp` is refused instead of
    /// changed. Returns whether the mode changed.
    pub fn secure_root(dir: &Path) -> Result<bool, StepUserError> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
        if mode & 0o022 == 0 {
            return Ok(false);
        }
        if mode & 0o1000 != 0 {
            return Err(StepUserError::SharedRoot(dir.to_path_buf()));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o022))?;
        Ok(true)
    }

    /// Gives `root` and everything under it to this user, without following links.
    ///
    /// Children are changed before their directory, so every directory whose entries are being
    /// changed still belongs to the agent: a step process of this user (another job's, under
    /// `raibid up`) cannot swap an entry for a link to somewhere else while the walk runs.
    /// Files with more than one link are left alone: such a file is shared with something
    /// outside the tree (a submodule cloned from a local mirror hard-links its objects), and
    /// git objects are read-only anyway.
    pub fn give(&self, root: &Path) -> io::Result<()> {
        // (path, children already visited); a stack, since a tree can nest deeper than ours.
        let mut pending: Vec<(PathBuf, bool)> = vec![(root.to_path_buf(), false)];
        while let Some((path, visited)) = pending.pop() {
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() && !visited {
                pending.push((path.clone(), true));
                for entry in std::fs::read_dir(&path)? {
                    pending.push((entry?.path(), false));
                }
                continue;
            }
            if meta.is_file() && meta.nlink() > 1 {
                continue;
            }
            std::os::unix::fs::lchown(&path, Some(self.uid), Some(self.gid))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for StepUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Changing a file's owner to another user, and starting a process as one, needs root.
    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test gives files to another user, which needs root (CI runs as root); run it \
             as root"
        );
    }

    const NOBODY: StepUser = StepUser {
        uid: 65534,
        gid: 65534,
    };

    #[test]
    fn numbers_names_and_mistakes() {
        assert_eq!(
            StepUser::parse("10002").unwrap(),
            StepUser {
                uid: 10002,
                gid: 10002
            }
        );
        assert_eq!(
            StepUser::parse(" 10002:20 ").unwrap(),
            StepUser {
                uid: 10002,
                gid: 20
            }
        );
        let nobody = StepUser::parse("nobody").unwrap();
        assert_ne!(nobody.uid, 0);
        for bad in [
            "",
            "10002:",
            ":5",
            "1:2:3",
            "-1",
            "x/y",
            "99999999999",
            "4294967295",
            "10002:4294967295",
        ] {
            let e = StepUser::parse(bad).unwrap_err();
            assert!(
                matches!(e, StepUserError::Invalid(_) | StepUserError::UnknownUser(_)),
                "{bad:?}: {e}"
            );
        }
        assert!(matches!(
            StepUser::parse("no-such-account-here").unwrap_err(),
            StepUserError::UnknownUser(_)
        ));
        for root in ["0", "0:0", "root"] {
            let e = StepUser::parse(root).unwrap_err();
            assert!(matches!(e, StepUserError::Root(_)), "{root}: {e}");
        }
    }

    #[test]
    fn give_changes_the_tree_but_nothing_a_link_or_a_hard_link_leads_to() {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "x").unwrap();
        std::fs::write(outside.join("object"), "x").unwrap();

        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
        std::fs::write(tree.join("a/b/c/file"), "x").unwrap();
        std::fs::write(tree.join("top"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/to-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), tree.join("to-file")).unwrap();
        std::fs::hard_link(outside.join("object"), tree.join("a/object")).unwrap();

        NOBODY.give(&tree).unwrap();

        let owner = |p: &Path| std::fs::symlink_metadata(p).unwrap().uid();
        for mine in [
            "",
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/file",
            "top",
            "a/to-dir",
            "to-file",
        ] {
            assert_eq!(owner(&tree.join(mine)), 65534, "{mine:?}");
        }
        for theirs in [&outside, &outside.join("secret"), &outside.join("object")] {
            assert_eq!(owner(theirs), 0, "{}", theirs.display());
        }
        assert_eq!(
            owner(&tree.join("a/object")),
            0,
            "a hard link is left alone"
        );
    }

    #[test]
    fn roots_lose_group_and_world_write_and_shared_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let [open, private, shared] = ["open", "private", "shared"].map(|n| dir.path().join(n));
        for (path, m) in [(&open, 0o777), (&private, 0o755), (&shared, 0o1777)] {
            std::fs::create_dir(path).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
        }
        assert!(StepUser::secure_root(&open).unwrap());
        assert_eq!(mode(&open), 0o755);
        assert!(!StepUser::secure_root(&open).unwrap());
        assert!(!StepUser::secure_root(&private).unwrap());
        assert!(matches!(
            StepUser::secure_root(&shared),
            Err(StepUserError::SharedRoot(_))
        ));
        assert_eq!(mode(&shared), 0o1777);
    }

    #[test]
    fn check_names_a_directory_the_step_user_cannot_enter() {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        let open = dir.path().join("open");
        std::fs::create_dir(&private).unwrap();
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        NOBODY.check(&[&open]).unwrap();
        let e = NOBODY.check(&[&open, &private]).unwrap_err();
        assert!(
            matches!(&e, StepUserError::Unreachable { dir, .. } if dir == &private),
            "{e}"
        );
        assert!(e.to_string().contains("65534:65534"), "{e}");
    }
}
