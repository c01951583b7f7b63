//! `services:` under the container executor: a network of the job's own, and one detached
//! container per service on it, known to the engine's DNS by the service's name. Steps join the
//! network (see [`StepSpec::network`](super::StepSpec::network)), so `postgres://db:5432`
//! reaches the `db` service. Without `agent.network` the network is internal: steps and
//! services reach each other and nothing else.
//!
//! Containers and network are named after the agent process like step containers, so an
//! agent's sweep removes those of dead agents; each container also has the job's life limit
//! (podman's `--timeout`, docker's watchdog).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use raibid_pipeline::{Ready, ReadyRun, Service};
use tokio_util::sync::CancellationToken;

use super::container::{
    ContainerEngine, ContainerExecutor, ENGINE_COMMAND_TIMEOUT, FIRST_RUN_TIMEOUT, StepEnv,
    Watchdog, engine_client, engine_command,
};
use super::{ExecError, OutputSender};

/// The job's services, as the runner hands them over.
#[derive(Debug, Clone)]
pub struct ServicesSpec {
    pub services: Vec<Service>,
    /// See [`StepSpec::private`](super::StepSpec::private): the services' env-files go here.
    pub private: Option<PathBuf>,
    /// See [`StepSpec::untrusted`](super::StepSpec::untrusted): images are pinned alike.
    pub untrusted: bool,
    /// What is left of the job's time: no service outlives it by more than a step would.
    pub timeout: Duration,
}

/// A job's running services and their network. [`ServiceGroup::finish`] hands over their logs
/// and removes them; a group dropped unfinished (the job's future abandoned) is removed on a
/// thread of its own.
#[derive(Debug)]
pub struct ServiceGroup {
    engine: ContainerEngine,
    network: String,
    /// (service name, container name), in the pipeline's order.
    containers: Vec<(String, String)>,
    watchdogs: Vec<Watchdog>,
    finished: bool,
}

impl ServiceGroup {
    /// The network steps join.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Sends each service's output to `output` under a heading of its name, then removes the
    /// containers and the network.
    pub async fn finish(mut self, output: OutputSender) {
        for (service, container) in &self.containers {
            let logs = engine_logs(&self.engine, container).await;
            let text = format!("\n\u{25b6} service {service}\n{logs}");
            let _ = output.send(text.into_bytes()).await;
        }
        self.remove().await;
    }

    /// Removes the containers and the network now.
    async fn remove(&mut self) {
        remove_all(&self.engine, &self.containers, &self.network).await;
        self.watchdogs.clear();
        self.finished = true;
    }
}

impl Drop for ServiceGroup {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let engine = self.engine.clone();
        let containers = std::mem::take(&mut self.containers);
        let network = self.network.clone();
        // A thread, not a task: drop may run outside a runtime or while it shuts down.
        std::thread::spawn(move || {
            let run = |args: Vec<&str>| {
                let _ = std::process::Command::new(engine.program())
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            };
            for (_, container) in &containers {
                run(engine.remove_args(container));
            }
            run(vec!["network", "rm", &network]);
        });
    }
}

/// How much of a service's output the job's log gets: its last lines, within a byte budget
/// per stream. A chatty service (a database logging every query) would otherwise fill the job's
/// log, and the agent's memory on the way, with its own. Cut here rather than by the engine's
/// `logs --tail`: podman 4.3's joins lines that reached its log file in pieces.
const SERVICE_LOG_LINES: usize = 1000;
const SERVICE_LOG_MAX_BYTES: usize = 512 * 1024;

/// The end of `reader`: at most [`SERVICE_LOG_LINES`] lines and [`SERVICE_LOG_MAX_BYTES`]
/// bytes, whatever its length.
async fn tail_of(mut reader: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * SERVICE_LOG_MAX_BYTES {
            kept.drain(..kept.len() - SERVICE_LOG_MAX_BYTES);
        }
    }
    if kept.len() > SERVICE_LOG_MAX_BYTES {
        kept.drain(..kept.len() - SERVICE_LOG_MAX_BYTES);
    }
    // The newline that ends the last line does not start another.
    let body = kept.strip_suffix(b"\n").unwrap_or(&kept);
    if let Some(cut) = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(SERVICE_LOG_LINES - 1)
        .map(|(i, _)| i + 1)
    {
        kept.drain(..cut);
    }
    Ok(kept)
}

/// Runs the engine's client with `args` and keeps the end of what it prints ([`tail_of`]),
/// stdout then stderr: a service's log, a readiness check's output. `None` when it did not end
/// within `timeout` (it is killed).
async fn engine_tail(
    engine: &ContainerEngine,
    args: &[&str],
    timeout: Duration,
) -> Option<std::io::Result<(std::process::ExitStatus, String)>> {
    let mut command = engine_client(engine.program(), args);
    let run = async {
        let mut child = command.spawn()?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(std::io::Error::other("no pipes to the engine's client"));
        };
        let (out, err) = tokio::join!(tail_of(stdout), tail_of(stderr));
        let status = child.wait().await?;
        let mut text = String::from_utf8_lossy(&out?).into_owned();
        text.push_str(&String::from_utf8_lossy(&err?));
        Ok((status, text))
    };
    tokio::time::timeout(timeout, run).await.ok()
}

/// The service's last lines, stdout then stderr (the engine keeps them apart).
async fn engine_logs(engine: &ContainerEngine, container: &str) -> String {
    match engine_tail(engine, &["logs", container], ENGINE_COMMAND_TIMEOUT).await {
        Some(Ok((_, mut text))) => {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text
        }
        Some(Err(e)) => format!("[raibid] cannot read the service's log: {e}\n"),
        None => "[raibid] cannot read the service's log: the engine did not answer\n".into(),
    }
}

async fn remove_all(engine: &ContainerEngine, containers: &[(String, String)], network: &str) {
    for (_, container) in containers {
        if let Err(why) = engine.remove(container).await {
            tracing::warn!(container, %why, "cannot remove a service container");
        }
    }
    let args = ["network", "rm", network];
    if let Err(why) = engine_command(engine.program(), args, ENGINE_COMMAND_TIMEOUT).await {
        tracing::warn!(network, %why, "cannot remove the services' network");
    }
}

impl ContainerExecutor {
    /// Creates the job's network and starts its services on it, in the pipeline's order; an
    /// image that cannot run or a service that does not start ends it, removing what started.
    pub(super) async fn start_service_group(
        &self,
        spec: &ServicesSpec,
        output: &OutputSender,
        cancel: &CancellationToken,
    ) -> Result<ServiceGroup, ExecError> {
        let network = self.container_name()?;
        let mut create = vec!["network", "create"];
        if !self.options.network {
            create.push("--internal");
        }
        create.push(&network);
        engine_command(self.engine.program(), create, ENGINE_COMMAND_TIMEOUT)
            .await
            .map_err(|why| {
                ExecError::Service(format!("cannot create the services' network: {why}"))
            })?;
        let mut group = ServiceGroup {
            engine: self.engine.clone(),
            network,
            containers: Vec::new(),
            watchdogs: Vec::new(),
            finished: false,
        };
        match self.start_and_wait(&mut group, spec, output, cancel).await {
            Ok(()) => Ok(group),
            Err(e) => {
                // Removed before the error is returned, so that a job that ends on it leaves
                // nothing behind (dropping the group would remove it later, on a thread).
                group.remove().await;
                Err(e)
            }
        }
    }

    /// Starts the services in the pipeline's order, then waits for those with `ready`.
    async fn start_and_wait(
        &self,
        group: &mut ServiceGroup,
        spec: &ServicesSpec,
        output: &OutputSender,
        cancel: &CancellationToken,
    ) -> Result<(), ExecError> {
        let job_deadline = Instant::now() + spec.timeout;
        for service in &spec.services {
            let start = self.start_service(group, service, spec, output);
            tokio::select! {
                started = start => started?,
                () = cancel.cancelled() => {
                    return Err(ExecError::Service("cancelled while the services started".into()));
                }
            }
        }
        for (service, (_, container)) in spec.services.iter().zip(&group.containers) {
            let Some(ready) = &service.ready else {
                continue;
            };
            let wait = wait_ready(
                &self.engine,
                service,
                container,
                ready,
                job_deadline,
                output,
            );
            tokio::select! {
                waited = wait => waited?,
                () = cancel.cancelled() => {
                    return Err(ExecError::Service(format!(
                        "cancelled while waiting for service {} to be ready",
                        service.name
                    )));
                }
            }
        }
        Ok(())
    }

    async fn start_service(
        &self,
        group: &mut ServiceGroup,
        service: &Service,
        spec: &ServicesSpec,
        output: &OutputSender,
    ) -> Result<(), ExecError> {
        let fail = |why: String| ExecError::Service(format!("service {}: {why}", service.name));
        let (image, _) = self
            .prepare_image(
                &service.image,
                spec.untrusted,
                false,
                spec.private.as_deref(),
                output,
            )
            .await?;
        let env = StepEnv::write(&service.env, spec.private.as_deref(), false)?;
        if env.values().is_some() {
            return Err(fail(
                "an `env` value with a newline or over 32 KiB cannot reach a service (it has no \
                 shell to read it from a file); put it in a file in the repository"
                    .into(),
            ));
        }
        let name = self.container_name()?;
        let engine_timeout = self.engine_timeout(spec.timeout);
        let mut args: Vec<OsString> = ["run", "--detach", "--name", &name, "--network"]
            .map(OsString::from)
            .to_vec();
        args.push(group.network.clone().into());
        args.extend(["--network-alias".into(), service.name.clone().into()]);
        args.push("--env-file".into());
        args.push(env.env_file().into());
        if let Some(seconds) = engine_timeout {
            args.extend(["--timeout".into(), seconds.to_string().into()]);
        }
        args.extend(self.options.limits.args());
        // docker takes only the program after `--entrypoint` (podman would take a JSON list
        // too); the rest of the entrypoint goes before the command, where the engine puts it.
        if let Some((program, rest)) = service.entrypoint.split_first() {
            args.extend(["--entrypoint".into(), program.into()]);
            args.push(image.clone().into());
            args.extend(rest.iter().map(OsString::from));
        } else {
            args.push(image.clone().into());
        }
        args.extend(service.command.iter().map(OsString::from));
        // Recorded first: a container that was created but failed to start is removed too.
        group.containers.push((service.name.clone(), name.clone()));
        // Before the container exists, as for steps: an agent killed while `run --detach` is
        // under way leaves a container that only this watchdog (it removes by name) ends.
        group.watchdogs.extend(self.watchdog(&name, spec.timeout));
        engine_command(self.engine.program(), args, FIRST_RUN_TIMEOUT)
            .await
            .map_err(|why| fail(format!("{image} did not start: {why}")))?;
        // The engine read the env-file when it created the container.
        drop(env);
        let note = format!("[raibid] service {} started ({image})\n", service.name);
        let _ = output.send(note.into_bytes()).await;
        Ok(())
    }
}

/// Between two tries of a readiness check.
const READY_INTERVAL: Duration = Duration::from_secs(1);

/// One try of a readiness check: a client that waits on a port nobody opens yet would
/// otherwise use the whole of `ready.timeout` on its first try.
const READY_TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `ready.run` in the service's container until it exits 0, starting tries for at most
/// `ready.timeout` (a try under way then has its [`READY_TRY_TIMEOUT`]), never past the job's
/// deadline. A service whose container has stopped is not waited for any longer. When it
/// gives up, what the last try printed and the service's own log go to `output` (the job's
/// log, where secrets are masked): why a database did not come up is in what it printed. The
/// error, which becomes the job's reason and commit status, carries neither, as a service's
/// environment may hold secrets that its output repeats.
async fn wait_ready(
    engine: &ContainerEngine,
    service: &Service,
    container: &str,
    ready: &Ready,
    job_deadline: Instant,
    output: &OutputSender,
) -> Result<(), ExecError> {
    let started = Instant::now();
    let deadline = (started + ready.timeout).min(job_deadline);
    let tries_text = |tries: u32| format!("{tries} {}", if tries == 1 { "try" } else { "tries" });
    let mut tries = 0u32;
    let (why, printed) = loop {
        tries += 1;
        // A try has its own time, whatever is left of the check's: cut to what was left, the
        // last try of a check that fails at once could be ended before it could say why
        // (an engine slow to `exec` under load takes a second). Only the job's end cuts it.
        let timeout = job_deadline
            .saturating_duration_since(Instant::now())
            .min(READY_TRY_TIMEOUT);
        let failed = match try_ready(engine, container, &ready.run, timeout).await {
            Ok(()) => {
                let note = format!(
                    "[raibid] service {} is ready ({:.1} s, {})\n",
                    service.name,
                    started.elapsed().as_secs_f64(),
                    tries_text(tries)
                );
                let _ = output.send(note.into_bytes()).await;
                return Ok(());
            }
            Err(failed) => failed,
        };
        if let Some(exit) = stopped(engine, container).await {
            break (
                format!("its container stopped ({exit}) before it was ready"),
                failed.printed,
            );
        }
        if Instant::now() + READY_INTERVAL >= deadline {
            break (
                format!(
                    "not ready within {:.0} s ({}); the last try of `{}` {}",
                    (deadline - started).as_secs_f64(),
                    tries_text(tries),
                    ready.run,
                    failed.verdict
                ),
                failed.printed,
            );
        }
        tokio::time::sleep(READY_INTERVAL).await;
    };
    let mut text = format!("[raibid] service {}: {why}\n", service.name);
    if !printed.is_empty() {
        text.push_str("[raibid] what the last try printed:\n");
        text.push_str(&printed);
        if !printed.ends_with('\n') {
            text.push('\n');
        }
    }
    let logs = engine_logs(engine, container).await;
    text.push_str(&format!("\n\u{25b6} service {}\n{logs}", service.name));
    let _ = output.send(text.into_bytes()).await;
    Err(ExecError::Service(format!(
        "service {}: {why} (the job's log has its output)",
        service.name
    )))
}

/// A readiness try that failed.
struct NotReady {
    /// `exited 3`, `did not end within 10 s`.
    verdict: String,
    /// Its last lines, stdout then stderr.
    printed: String,
}

/// One try: `<engine> exec <container> /bin/sh -c <commands>`, or `<engine> exec <container>
/// <program> <args>` for a check given as a list (an image without a shell). Each reaches the
/// engine as an argument of its own, never through a shell of the agent's. The output is kept
/// only to show why a try failed, and no more of it than of a service's log (a check that
/// prints without end must not fill the agent's memory).
async fn try_ready(
    engine: &ContainerEngine,
    container: &str,
    run: &ReadyRun,
    timeout: Duration,
) -> Result<(), NotReady> {
    let mut args = vec!["exec", container];
    args.extend(run.argv());
    let not_ready = |verdict: String, printed: String| NotReady { verdict, printed };
    match engine_tail(engine, &args, timeout).await {
        None => Err(not_ready(
            format!("did not end within {:.0} s", timeout.as_secs_f64().ceil()),
            String::new(),
        )),
        Some(Err(e)) => Err(not_ready(format!("could not run: {e}"), String::new())),
        Some(Ok((status, _))) if status.success() => Ok(()),
        Some(Ok((status, text))) => {
            let lines: Vec<&str> = text.lines().collect();
            let printed = lines[lines.len().saturating_sub(READY_OUTPUT_LINES)..].join("\n");
            let verdict = status
                .code()
                .map_or_else(|| status.to_string(), |c| format!("exited {c}"));
            Err(not_ready(verdict, printed))
        }
    }
}

/// How much of a failed readiness check's output the log gets.
const READY_OUTPUT_LINES: usize = 20;

/// The container's exit (`exit code 1`) if it is no longer running; `None` while it runs, or
/// when the engine cannot say (then the readiness check's own verdict decides).
async fn stopped(engine: &ContainerEngine, container: &str) -> Option<String> {
    let args = [
        "inspect",
        "--format",
        "{{.State.Running}} {{.State.ExitCode}}",
        container,
    ];
    let state = engine_command(engine.program(), args, ENGINE_COMMAND_TIMEOUT)
        .await
        .ok()?;
    match state.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["false", code] => Some(format!("exit code {code}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tail(text: &[u8]) -> Vec<u8> {
        tail_of(text).await.unwrap()
    }

    #[tokio::test]
    async fn a_service_log_keeps_its_last_lines_within_its_budget() {
        let lines: String = (1..=2500).map(|i| format!("{i}\n")).collect();
        let expected: String = (1501..=2500).map(|i| format!("{i}\n")).collect();
        assert_eq!(tail(lines.as_bytes()).await, expected.as_bytes());
        assert_eq!(tail(b"a\nb").await, b"a\nb");
        assert_eq!(tail(b"").await, b"");
        let long = vec![b'x'; 3 * SERVICE_LOG_MAX_BYTES];
        assert_eq!(tail(&long).await.len(), SERVICE_LOG_MAX_BYTES);
    }
}
