use std::io::Read;
use std::process::ExitCode;

use rand::RngCore;

use crate::cli::TokenCommand;

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::New => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            println!("token: {token}");
            println!("server.tokens entry: {}", raibid_config::hash_token(&token));
        }
        TokenCommand::Hash => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            let token = token.trim();
            anyhow::ensure!(!token.is_empty(), "no token on standard input");
            println!("{}", raibid_config::hash_token(token));
        }
    }
    Ok(ExitCode::SUCCESS)
}
