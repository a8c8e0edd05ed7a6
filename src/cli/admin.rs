//! `switchyard token …` (admin API tokens) and `switchyard audit verify`.

use std::io::Read;
use std::process::ExitCode;

use base64::Engine;
use clap::Subcommand;
use sha2::Digest;

use crate::config::Config;
use crate::store::Store;

/// The `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new admin API token: prints the token (give it to its holder; switchyard never
    /// stores it) and the [admin.tokens] lines with its SHA-256 for the configuration.
    New {
        /// The principal's name (the audit trail says `token:<name>`).
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// Print the SHA-256 of a token read from standard input (for tokens made elsewhere).
    Hash,
}

/// The `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit trail's hash chain: exit 0 when every row follows from the one before,
    /// 1 with the first broken link otherwise.
    Verify {
        /// Ask the admin API of a running instance instead of opening the store.
        #[arg(long)]
        admin_url: Option<String>,
        /// The token for --admin-url (default: $SWITCHYARD_ADMIN_TOKEN).
        #[arg(long)]
        token_file: Option<std::path::PathBuf>,
    },
}

/// A token: `sy_` and 32 random bytes, URL-safe base64.
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(format!(
        "sy_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Runs a `token` subcommand.
pub(super) fn token(command: &TokenCommand) -> ExitCode {
    match command {
        TokenCommand::New { name, role } => {
            if !matches!(role.as_str(), "viewer" | "operator" | "admin") {
                eprintln!("error: unknown role `{role}`; the roles are viewer, operator and admin");
                return ExitCode::from(2);
            }
            let token = match new_token() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
            eprintln!("token for {name} (shown once; switchyard keeps only its SHA-256):");
            println!("{token}");
            eprintln!(
                "\nadd to the configuration (or put the digest in an environment variable):\n"
            );
            eprintln!("[admin.tokens.{name}]\nrole = \"{role}\"\nsha256 = \"{digest}\"");
            ExitCode::SUCCESS
        }
        TokenCommand::Hash => {
            let mut token = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut token) {
                eprintln!("error: reading the token: {e}");
                return ExitCode::FAILURE;
            }
            let token = token.trim();
            if token.is_empty() {
                eprintln!("error: no token on standard input");
                return ExitCode::from(2);
            }
            println!("{}", hex::encode(sha2::Sha256::digest(token.as_bytes())));
            ExitCode::SUCCESS
        }
    }
}

/// `audit verify` straight on the store.
pub(super) async fn verify(config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.dlq.store).await?;
    let v = store.audit_trail().verify().await?;
    Ok(report(&serde_json::to_value(&v)?))
}

/// `audit verify --admin-url`.
pub(super) async fn verify_remote(
    url: &str,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let remote = super::dlq_remote::Remote::new(url, token_file)?;
    let v = remote.get("/api/v1/audit/verify").await?;
    Ok(report(&v))
}

fn report(v: &serde_json::Value) -> ExitCode {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    if v["broken"].is_null() {
        eprintln!(
            "the audit trail is intact: {} rows verified ({} from before the chain); last hash {}",
            v["verified"],
            v["unchained"],
            v["last_hash"].as_str().unwrap_or("")
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "the audit trail is BROKEN at row {}: {}",
            v["broken"]["id"],
            v["broken"]["reason"].as_str().unwrap_or("")
        );
        ExitCode::FAILURE
    }
}
