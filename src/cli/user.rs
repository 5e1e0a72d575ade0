//! `coinpulse user …`: dashboard accounts on the configured database.

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::accounts::{self, AccountError};
use crate::config::DatabaseSettings;
use crate::domain::Role;
use crate::store::{NewAudit, Store};

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    settings: DatabaseSettings,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a dashboard user; the password is prompted for (twice), or read from stdin.
    Add {
        /// The user's email, used to sign in.
        #[arg(long)]
        email: String,
        /// owner (everything) or staff (no prices, refunds, users or secrets).
        #[arg(long, value_parser = ["owner", "staff"])]
        role: String,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List dashboard users: email, role, created.
    List,
    /// Remove a dashboard user (the last owner cannot be removed).
    Remove {
        #[command(flatten)]
        who: Who,
    },
    /// Set a new password for a user and sign them out everywhere.
    ResetPassword {
        #[command(flatten)]
        who: Who,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// The user a command is about: `EMAIL` or `--email EMAIL`, whichever people type.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Who {
    /// The user's email.
    #[arg(value_name = "EMAIL")]
    email: Option<String>,
    /// The user's email (the same as the positional EMAIL).
    #[arg(long = "email", value_name = "EMAIL")]
    email_flag: Option<String>,
}

impl Who {
    fn email(&self) -> &str {
        self.email
            .as_deref()
            .or(self.email_flag.as_deref())
            .expect("clap requires one of them")
    }
}

/// The new password: one line of stdin, or typed twice at a hidden prompt.
fn read_password(from_stdin: bool) -> anyhow::Result<(String, String)> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let p = line.trim_end_matches(['\r', '\n']).to_owned();
        return Ok((p.clone(), p));
    }
    let p = rpassword::prompt_password("Password: ")?;
    let c = rpassword::prompt_password("Again: ")?;
    Ok((p, c))
}

fn explain(e: AccountError) -> anyhow::Error {
    match e {
        AccountError::Store(s) => anyhow::Error::new(s),
        other => anyhow::anyhow!("{other}"),
    }
}

async fn audit(store: &Store, action: &str, email: &str, detail: &str) {
    accounts::audit(
        store,
        NewAudit {
            actor: "cli",
            ip: None,
            action,
            subject: Some(email),
            detail,
        },
    )
    .await;
}

pub async fn run(args: UserArgs) -> anyhow::Result<()> {
    let settings = args.settings.existing()?;
    let store = Store::connect(&settings.database_url).await?;
    match args.command {
        UserCommand::Add {
            email,
            role,
            password_stdin,
        } => {
            let role: Role = role.parse()?;
            let email = accounts::normalize_email(&email).map_err(explain)?;
            if store.user_by_email(&email).await?.is_some() {
                anyhow::bail!("a user with email {email} already exists");
            }
            let (password, confirm) = read_password(password_stdin)?;
            let user = accounts::create_user(&store, &email, role, &password, &confirm)
                .await
                .map_err(explain)?;
            audit(&store, "user.add", &user.email, role.as_str()).await;
            println!("added {} ({})", user.email, user.role);
            println!("sign in at {}/admin/login", settings.public_url);
        }
        UserCommand::List => {
            let users = store.users().await?;
            if users.is_empty() {
                println!("No users yet. Add the owner with: coinpulse user add --email you@example.com --role owner");
            }
            for u in users {
                println!(
                    "{:<40} {:<6} created {}",
                    u.email,
                    u.role,
                    u.created_at.get(..10).unwrap_or(&u.created_at)
                );
            }
        }
        UserCommand::Remove { who } => {
            let user = accounts::remove_user(&store, who.email())
                .await
                .map_err(explain)?;
            audit(&store, "user.remove", &user.email, "").await;
            println!("removed {}", user.email);
        }
        UserCommand::ResetPassword {
            who,
            password_stdin,
        } => {
            let email = accounts::normalize_email(who.email()).map_err(explain)?;
            let user = store
                .user_by_email(&email)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user {email}"))?;
            let (password, confirm) = read_password(password_stdin)?;
            accounts::set_password(&store, &user, &password, &confirm)
                .await
                .map_err(explain)?;
            audit(&store, "user.reset_password", &user.email, "").await;
            println!(
                "new password set for {}; their sessions are signed out",
                user.email
            );
        }
    }
    Ok(())
}
