//! `raibid`: see the library's documentation.

fn main() -> std::process::ExitCode {
    raibid_cli::main()
}
