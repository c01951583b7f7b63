//! `raibid-agent`: the agent alone, for the local pool and agent pods (see the library's
//! documentation).

fn main() -> std::process::ExitCode {
    raibid_cli::agent_main()
}
