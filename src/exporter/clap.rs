//! `clap` flags for a server's command line (feature `clap`).

use std::net::SocketAddr;

use super::{MetricsServer, PrometheusExporter};

/// Command-line flags for a server's CLI (feature `clap`): flatten them into your own
/// arguments with `#[command(flatten)]`.
///
/// ```
/// use clap::Parser;
/// use tonic_metrics::exporter::MetricsArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[arg(long, default_value_t = 50051)]
///     port: u16,
///     #[command(flatten)]
///     metrics: MetricsArgs,
/// }
///
/// let cli = Cli::parse_from(["server", "--port", "7000", "--enable-metrics"]);
/// let exporter = cli.metrics.exporter(([0, 0, 0, 0], cli.port).into()).unwrap();
/// assert_eq!(exporter.listen_addr().unwrap().port(), 7001);
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "clap")))]
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
// The doc comment above is for rustdoc only: without these, clap would make it the host
// program's `--help` description (example included) when the host has none of its own.
#[command(about = None, long_about = None)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics over HTTP at /metrics.
    #[arg(long)]
    pub enable_metrics: bool,

    /// Port of the /metrics listener [default: the gRPC port + 1].
    #[arg(long, value_name = "PORT", requires = "enable_metrics")]
    pub metrics_http_port: Option<u16>,
}

impl MetricsArgs {
    /// The exporter these flags ask for, next to `grpc_addr`; `None` without `--enable-metrics`.
    pub fn exporter(&self, grpc_addr: SocketAddr) -> Option<PrometheusExporter> {
        self.enable_metrics.then(|| {
            let exporter = PrometheusExporter::for_grpc_addr(grpc_addr);
            match self.metrics_http_port {
                Some(port) => exporter.with_port(port),
                None => exporter,
            }
        })
    }

    /// Installs the exporter these flags ask for, logging (not failing) if it cannot start.
    pub fn install_or_warn(&self, grpc_addr: SocketAddr) -> Option<MetricsServer> {
        self.exporter(grpc_addr)?.install_or_warn()
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::MetricsArgs;

    // A host parser with no description of its own (no doc comment).
    #[derive(Parser)]
    struct Bare {
        #[command(flatten)]
        metrics: MetricsArgs,
    }

    /// Serves things.
    #[derive(Parser)]
    struct Described {
        #[command(flatten)]
        metrics: MetricsArgs,
    }

    #[test]
    fn the_flags_do_not_describe_the_host_program() {
        let help = Bare::command().render_long_help().to_string();
        assert!(!help.contains("Command-line flags"), "{help}");
        assert!(!help.contains("```"), "{help}");
        assert!(help.contains("--enable-metrics"), "{help}");
        let help = Described::command().render_long_help().to_string();
        assert!(help.starts_with("Serves things"), "{help}");
        assert!(!help.contains("Command-line flags"), "{help}");
    }
}
