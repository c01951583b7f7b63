//! What a process that holds credentials does to itself before anyone's code runs beside it.

/// Makes this process non-dumpable, so that other processes of the same user can no longer read
/// its `/proc/<pid>/environ`, `mem` or `fd` (only holders of `CAP_SYS_PTRACE` can).
///
/// The agent, the server and `raibid up` keep the Redis URL with its password, forge tokens and
/// registry logins in their environment and memory, and a step under the host executor runs as
/// the same user: without this, `cat /proc/$PPID/environ` in a pipeline hands out the queue,
/// and with it the power to forge jobs of other repositories that get their secrets. Steps are
/// new executables and dumpable again, so debuggers and core dumps inside a step still work;
/// the price is no core dump of raibid itself.
pub fn forbid_inspection() -> std::io::Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)
}
