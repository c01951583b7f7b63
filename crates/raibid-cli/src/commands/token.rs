use std::io::Read;
use std::process::ExitCode;

use rand::RngCore;

use crate::cli::{TokenCommand, TokenScopeArg};

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::New {
            name,
            scopes,
            repos,
        } => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let Some(name) = name else {
                println!("token: {token}");
                println!("server.tokens entry: {}", raibid_config::hash_token(&token));
                return Ok(ExitCode::SUCCESS);
            };
            let entry = entry(&token, name, scopes, repos)?;
            println!("token: {token}");
            println!("server.tokens entry:");
            print!("{entry}");
        }
        TokenCommand::Hash => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            let token = token.trim();
            anyhow::ensure!(!token.is_empty(), "no token on standard input");
            if token.chars().count() < GUESSABLE_BELOW {
                // The hash is unsalted SHA-256: a short token falls to guessing, online (the
                // server only slows that down) or against a copy of the configuration.
                eprintln!(
                    "warning: a token of {} characters can be guessed; `raibid token new` \
                     makes a random one of 256 bits",
                    token.chars().count()
                );
            }
            println!("{}", raibid_config::hash_token(token));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Tokens shorter than this get a warning from `raibid token hash`.
const GUESSABLE_BELOW: usize = 20;

/// The `server.tokens` entry of a named token, indented to paste under `tokens:`, checked by
/// the same rules the server's configuration is.
fn entry(
    token: &str,
    name: String,
    scopes: Vec<TokenScopeArg>,
    repos: Vec<String>,
) -> anyhow::Result<String> {
    let mut scopes: Vec<raibid_config::TokenScope> = scopes.into_iter().map(Into::into).collect();
    scopes.sort();
    scopes.dedup();
    let entry = raibid_config::ApiToken {
        name,
        hash: raibid_config::TokenHash::of(token),
        scopes: if scopes.is_empty() {
            raibid_config::TokenScope::ALL.to_vec()
        } else {
            scopes
        },
        repos: if repos.is_empty() {
            vec!["*".into()]
        } else {
            repos
        },
    };
    let yaml = serde_yaml::to_string(&[&entry])?;
    let config = format!(
        "server:\n  tokens:\n{}",
        yaml.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    raibid_config::load_from_str(&config, std::path::Path::new("--name/--repo"), &[])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(yaml.lines().map(|l| format!("  {l}\n")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_entry_reads_back_as_the_configuration_reads_it() {
        let yaml = entry(
            "t0k3n",
            "release-bot".into(),
            vec![
                TokenScopeArg::Jobs,
                TokenScopeArg::Read,
                TokenScopeArg::Jobs,
            ],
            vec!["acme/*".into()],
        )
        .unwrap();
        let config = raibid_config::load_from_str(
            &format!("server:\n  tokens:\n{yaml}"),
            std::path::Path::new("t"),
            &[],
        )
        .unwrap();
        let token = &config.server.tokens[0];
        assert_eq!(token.name, "release-bot");
        assert!(token.hash.matches("t0k3n"));
        assert_eq!(
            token.scopes,
            [
                raibid_config::TokenScope::Read,
                raibid_config::TokenScope::Jobs
            ]
        );
        assert_eq!(token.repos, ["acme/*"]);
        let all = entry("t", "ops".into(), vec![], vec![]).unwrap();
        assert!(all.contains("scopes:") && all.contains("- '*'"), "{all}");
        let err = entry("t", "a b".into(), vec![], vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.tokens[0].name"), "{err}");
        let err = entry("t", "x".into(), vec![], vec!["a/[".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.tokens[0].repos[0]"), "{err}");
    }
}
