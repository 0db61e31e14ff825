//! `xfull serve`: disks of a point as NBD exports until SIGINT/SIGTERM,
//! or SIGHUP unless run under `nohup` (see [`crate::Hangup`]).

use std::io::Write;

use anyhow::Result;
use xfull_core::Error;
use xfull_core::nbd::{Listener, Server, ServerEvent, ServerOptions};
use xfull_core::serve::{ServeOptions, Served};

use crate::cli::{Cli, ServeArgs};
use crate::cmd::serving::{Notices, spec};

pub async fn run(cli: &Cli, args: &ServeArgs) -> Result<()> {
    // From the start, as `mount` does: a hang-up before the server runs
    // must not kill it with its lease taken.
    let mut hangup = crate::Hangup::catch()?;
    let repo = crate::open::open(cli).await?;
    let spec = spec(&repo, &args.point, &args.disk).await?;
    let progress = crate::progress();
    let opts = ServeOptions {
        cache_bytes: args.cache,
        overlay: args.overlay.clone(),
        ..Default::default()
    };
    let served = Served::open(&repo, &[spec], &opts, progress.clone()).await?;
    match serve(cli, args, &served, &mut hangup).await {
        Ok(()) => {
            // A lapsed lease stopped it: the clients were cut off, an
            // overlay is flushed, and the exit is an error (1), not 130.
            // What closing says (an overlay's flush failed: acknowledged
            // writes may be lost) is a warning then, not dropped.
            if let Some(lapsed) = served.lapse() {
                if let Err(e) = served.close().await {
                    say!("xfull: warning: {e:#}");
                }
                return Err(lapsed.into());
            }
            served.close().await?;
            Err(Error::Cancelled {
                cleaned: "the server stopped; its lease on the point was released".into(),
            }
            .into())
        }
        Err(e) => {
            let _ = served.close().await;
            Err(e)
        }
    }
}

/// Serves until cancelled or hung up.
async fn serve(
    cli: &Cli,
    args: &ServeArgs,
    served: &Served,
    hangup: &mut crate::Hangup,
) -> Result<()> {
    let exports = served.exports.iter().map(|(_, e)| e.clone()).collect();
    let listener = match (&args.socket, &args.listen) {
        (Some(path), _) => Listener::bind_unix(path)?,
        (None, Some(addr)) => Listener::bind_tcp(addr).await?,
        (None, None) => unreachable!("clap requires --socket or --listen"),
    };
    let verbose = cli.verbose;
    let server = Server::new(exports, ServerOptions::default())?.on_event(move |e| {
        if verbose {
            let line = match e {
                ServerEvent::Connected { client, peer } => {
                    format!("client {client} connected ({peer})")
                }
                ServerEvent::Disconnected {
                    client,
                    error: None,
                } => {
                    format!("client {client} disconnected")
                }
                ServerEvent::Disconnected {
                    client,
                    error: Some(e),
                } => {
                    format!("client {client} disconnected: {e}")
                }
                ServerEvent::Refused { peer } => format!("refused {peer}: too many clients"),
            };
            say!("xfull: {}", crate::output::printable(&line));
        }
    });
    let m = &served.manifests[0];
    let mut uris = Vec::new();
    for (_, e) in &served.exports {
        uris.push((
            e.name().to_string(),
            e.size(),
            listener.uri(e.name())?.to_string(),
        ));
    }
    if cli.json {
        let doc = serde_json::json!({
            "point": m.point_name(),
            "lease": served.lease_id(),
            "writable": args.writable,
            "exports": uris.iter().map(|(disk, size, uri)| serde_json::json!({
                "disk": disk, "size": size, "uri": uri,
            })).collect::<Vec<_>>(),
        });
        println!("{}", crate::output::json_text(&doc)?);
    } else {
        for (disk, size, uri) in &uris {
            println!("{uri}");
            if !cli.quiet {
                say!(
                    "xfull: serving {} disk {} ({} bytes{}) at {uri}",
                    m.point_name(),
                    crate::output::printable(disk),
                    size,
                    if args.writable {
                        ", writable"
                    } else {
                        ", read-only"
                    }
                );
            }
        }
        if !cli.quiet {
            say!("xfull: Ctrl-C or SIGTERM stops the server");
        }
    }
    std::io::stdout().flush()?;
    let progress = crate::progress();
    let _notices = Notices::start(progress.clone());
    let stop = async {
        tokio::select! {
            _ = progress.cancelled() => {}
            _ = hangup.recv() => {}
            _ = served.lapsed() => {}
        }
    };
    server.serve(listener, stop).await?;
    Ok(())
}
