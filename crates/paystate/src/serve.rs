//! `paystate serve`: ingress, embedded log, projector and admin API in one process.

use anyhow::{Context, Result};
use paystate_ingress::{admin_router, metrics::Metrics, public_router, Admin, Ingress, Mode};
use paystate_projector::Projector;
use paystate_store::Store;
use paystate_stripe::{Webhook, WebhookSecret};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Data directory (log and projection). Created when missing.
    #[arg(long, default_value = "paystate-data")]
    pub data_dir: PathBuf,
    /// Public listener: serves only POST /webhooks/stripe and GET /healthz.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener: query API, streams, status, metrics.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Webhook signing secret (`whsec_…`); repeat during a rotation. Or STRIPE_WEBHOOK_SECRET, comma-separated.
    #[arg(
        long = "webhook-secret",
        env = "STRIPE_WEBHOOK_SECRET",
        value_delimiter = ',',
        hide_env_values = true,
        required = true
    )]
    pub webhook_secrets: Vec<String>,
    /// Signature timestamp tolerance in seconds, both directions; 0 disables.
    #[arg(long, default_value_t = paystate_stripe::DEFAULT_TOLERANCE_SECS)]
    pub tolerance_secs: u64,
    /// Refuse events of the other mode.
    #[arg(long, value_parser = ["test", "live"])]
    pub mode: Option<String>,
    /// Log partitions (fixed when the data directory is created).
    #[arg(long, default_value_t = paystate_store::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Largest webhook body accepted, in bytes.
    #[arg(long, default_value_t = paystate_ingress::DEFAULT_BODY_LIMIT_BYTES)]
    pub body_limit_bytes: usize,
    /// Most records the projector commits in one transaction.
    #[arg(long, default_value_t = 512)]
    pub batch_max: usize,
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn wait_for(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Runs until SIGTERM/SIGINT, then: stops accepting, finishes in-flight appends, commits the projector.
pub async fn run(args: ServeArgs) -> Result<()> {
    let secrets = args.webhook_secrets.iter().map(|s| WebhookSecret::new(s.trim())).collect::<Result<Vec<_>, _>>()?;
    let webhook = Webhook::new(secrets, args.tolerance_secs)?;
    let mode = match args.mode.as_deref() {
        Some("live") => Some(Mode::Live),
        Some(_) => Some(Mode::Test),
        None => None,
    };
    let store = Store::open(&args.data_dir, args.partitions)
        .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
    let appender = store.log.start_appender();
    let metrics = Arc::new(Metrics::default());
    let ingress = Ingress {
        webhook,
        mode,
        body_limit_bytes: args.body_limit_bytes,
        partitions: args.partitions,
        appender: appender.handle(),
        metrics: Arc::clone(&metrics),
    };
    let projector = Arc::new(Projector::new(store.log.clone(), store.projection.clone(), args.batch_max));
    let admin = Admin { store: store.clone(), committed: projector.subscribe(), metrics };

    let public =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding {}", args.admin_listen))?;
    let (public_addr, admin_addr) = (public.local_addr()?, admin_listener.local_addr()?);
    // One line on stdout that scripts and tests can read the bound addresses from.
    println!("paystate serve: webhooks on http://{public_addr}/webhooks/stripe, admin on http://{admin_addr}");
    std::io::stdout().flush()?;
    tracing::info!(%public_addr, %admin_addr, data_dir = %args.data_dir.display(), partitions = args.partitions, "serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ingress_done_tx, ingress_done_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        tracing::info!("shutting down: no new webhooks, finishing in-flight appends");
        let _ = stop_tx.send(true);
    });
    let public_server = tokio::spawn(paystate_ingress::serve(public, public_router(ingress), wait_for(&stop_rx)));
    let admin_server =
        tokio::spawn(paystate_ingress::serve(admin_listener, admin_router(admin), wait_for(&ingress_done_rx)));
    let projector_task = tokio::spawn(Arc::clone(&projector).run(store.log.subscribe(), wait_for(&ingress_done_rx)));

    public_server.await.context("public server task")?.context("public server")?;
    // Every in-flight webhook has been answered; let the appender drain and stop.
    tokio::task::spawn_blocking(move || appender.close()).await.context("closing the log appender")?;
    let _ = ingress_done_tx.send(true);
    projector_task.await.context("projector task")?;
    admin_server.await.context("admin server task")?.context("admin server")?;
    tracing::info!("stopped cleanly");
    Ok(())
}
