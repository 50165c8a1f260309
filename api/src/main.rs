use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kalamdb_api::{app, cli_sql, config::Config, demo};
use kalamdb_auth::identity::Role;
use kalamdb_engine::sql::parse::split_script;

/// mimalloc: a request allocates and frees many small values (rows, keys, JSON), which
/// glibc's allocator served at about a sixth of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "kalamdb", version, about = "KalamDB GraphQL: a realtime backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// ADDR:PORT to listen on; port 0 picks a free port.
        #[arg(long)]
        listen: Option<String>,
        /// Apply the demo schema and create the demo user.
        #[arg(long)]
        demo: bool,
    },
    /// Print the GraphQL schema (SDL) a role sees, sorted and stable, for client code
    /// generation. Reads the data directory, so run it while the server is stopped (a
    /// running server answers standard introspection instead).
    Schema {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// user, service, dba or system.
        #[arg(long, default_value = "user")]
        role: String,
        /// Apply the demo schema first.
        #[arg(long)]
        demo: bool,
    },
    /// Run SQL against a server and print the results.
    Sql {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long)]
        user: String,
        #[arg(long, env = "KALAMDB_PASSWORD", hide_env_values = true)]
        password: String,
        /// Read statements from this file.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// The statement to run.
        statement: Option<String>,
    },
}

/// The stack of every thread that runs request work. Input is bounded before anything
/// recurses over it (SQL expression depth, GraphQL nesting, filter depth), and this
/// leaves planning, optimizing and evaluating a wide margin over those bounds. Pages
/// are committed only when touched.
const WORKER_STACK_BYTES: usize = 16 << 20;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build()?;
    let result = runtime.block_on(run());
    // a query still inside one long computation (its task was dropped, but it has not
    // reached an await point) does not hold the process after shutdown
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
            demo: with_demo,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("KALAMDB_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(d) = data_dir {
                cfg.engine.data_dir = d;
            }
            if let Some(l) = listen {
                cfg.listen = l;
            }
            cfg.demo |= with_demo;
            let listener = tokio::net::TcpListener::bind(&cfg.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.listen))?;
            let addr = listener.local_addr()?;
            let demo_on = cfg.demo;
            let (router, state) = app::build_app(cfg).await?;
            tracing::info!("listening on http://{addr}");
            if demo_on {
                println!("KalamDB is running at http://{addr}");
                println!("  GraphQL:   POST http://{addr}/v1/graphql, subscriptions on ws://{addr}/v1/graphql");
                println!("  SQL API:   POST http://{addr}/v1/sql");
                println!("  demo user: {} / {}", demo::DEMO_USER, demo::DEMO_PASSWORD);
                println!(
                    "  try:       kalamdb sql --url http://{addr} --user {} --password {} \"SELECT * FROM app.todos\"",
                    demo::DEMO_USER,
                    demo::DEMO_PASSWORD
                );
                println!(
                    "  root:      user root, with the password in KALAMDB_ROOT_PASSWORD at first start (loopback only)"
                );
            }
            app::serve(listener, router, &state, app::shutdown_signal()).await?;
            Ok(())
        }
        Command::Schema {
            config,
            data_dir,
            role,
            demo: with_demo,
        } => {
            let role: Role = role.parse().map_err(|_| anyhow::anyhow!("unknown role '{role}'"))?;
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(d) = data_dir {
                cfg.engine.data_dir = d;
            }
            cfg.demo |= with_demo;
            print!("{}", app::schema_sdl(cfg, role).await?);
            Ok(())
        }
        Command::Sql {
            url,
            user,
            password,
            file,
            statement,
        } => {
            let statements = match (file, statement) {
                (Some(f), None) => {
                    split_script(&std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?)
                }
                (None, Some(s)) => vec![s],
                _ => anyhow::bail!("give either a statement or -f FILE"),
            };
            let client = reqwest::Client::new();
            for s in statements {
                match cli_sql::run(&client, &url, &user, &password, &s).await {
                    Ok(v) => print!("{}", cli_sql::render(&v)),
                    Err(e) => {
                        eprintln!("{e}");
                        std::process::exit(1);
                    }
                }
            }
            Ok(())
        }
    }
}
