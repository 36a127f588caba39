//! Reading what `/metrics` serves: a plain HTTP/1.1 GET and a parser for the Prometheus
//! text format, enough for tests and the demo to check exact values.

use std::{collections::BTreeMap, io, net::SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name, e.g. `grpc_server_handling_seconds_bucket`.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// An HTTP response: status code, headers (lower-cased names) and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names, lower-cased, with their values.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl HttpResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `METHOD path` to `addr` over HTTP/1.1 with `Connection: close`, reads to EOF.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> io::Result<HttpResponse> {
    let raw = http_request_with(addr, method, path, &[]).await?;
    let body = String::from_utf8_lossy(&raw.body).into_owned();
    Ok(HttpResponse { status: raw.status, headers: raw.headers, body })
}

/// An HTTP response with its body as bytes (protobuf, gzip).
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header names, lower-cased, with their values.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked, not decompressed).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `METHOD path` with extra request headers, reads to EOF.
pub async fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<RawResponse> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = &raw[end + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other("no status line"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect::<Vec<_>>();
    let body = if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok(RawResponse { status, headers, body })
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let rest = &body[line_end + 2..];
        let Some(size) = size else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// GETs `/metrics` from `addr` and returns the body, failing on a non-200 answer.
pub async fn scrape(addr: SocketAddr) -> io::Result<String> {
    let response = http_request(addr, "GET", "/metrics").await?;
    if response.status != 200 {
        return Err(io::Error::other(format!("GET /metrics answered {}", response.status)));
    }
    Ok(response.body)
}

/// Parses every sample line of a text exposition (comments and blank lines skipped).
///
/// # Errors
/// The first line that is not `name{labels} value` or `name value`.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).ok_or_else(|| format!("not a sample line: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    other => value.push(other),
                }
            };
            labels.insert(key.trim().to_string(), value);
            inner = &after[end + 1..];
        }
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other.parse().ok()?,
    };
    // An optional timestamp in milliseconds, then nothing.
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().ok()?;
    }
    (fields.next().is_none() && !name.is_empty()).then(|| Sample { name: name.to_string(), labels, value })
}

/// The sum of the samples named `name` whose labels include every pair of `selector`.
pub fn sum(samples: &[Sample], name: &str, selector: &[(&str, &str)]) -> f64 {
    select(samples, name, selector).map(|s| s.value).sum()
}

/// The samples named `name` whose labels include every pair of `selector`.
pub fn select<'a>(
    samples: &'a [Sample],
    name: &'a str,
    selector: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a Sample> + 'a {
    samples.iter().filter(move |s| {
        s.name == name && selector.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
    })
}

/// Estimates the `q` quantile from cumulative `(le, count)` buckets the way PromQL's
/// `histogram_quantile` does: linear interpolation inside the bucket the rank falls in;
/// the highest finite bound if it falls in `+Inf`. `None` without observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            let fraction = if in_bucket > 0.0 { (rank - lower.1) / in_bucket } else { 1.0 };
            return Some(lower.0 + (le - lower.0) * fraction);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// The cumulative buckets of one histogram series (`{name}_bucket` samples matching
/// `selector`), summed over any other labels.
pub fn buckets(samples: &[Sample], name: &str, selector: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket_name = format!("{name}_bucket");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for sample in select(samples, &bucket_name, selector) {
        let Some(le) = sample.labels.get("le") else { continue };
        let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
        if le.is_nan() {
            continue;
        }
        let entry = by_le.entry(le.to_bits()).or_insert((le, 0.0));
        entry.1 += sample.value;
    }
    let mut out: Vec<_> = by_le.into_values().collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_special_values() {
        let text = "# HELP x A thing.\n# TYPE x counter\n\
                    x 1\n\
                    y{a=\"1\",b=\"q\\\"uo,te}\\\\\"} 2.5 1700000000000\n\
                    z_bucket{le=\"+Inf\"} +Inf\n\
                    w{} NaN\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!((samples[0].name.as_str(), samples[0].value), ("x", 1.0));
        assert!(samples[0].labels.is_empty());
        assert_eq!(samples[1].labels["b"], "q\"uo,te}\\");
        assert_eq!(samples[1].value, 2.5);
        assert_eq!(samples[2].labels["le"], "+Inf");
        assert_eq!(samples[2].value, f64::INFINITY);
        assert!(samples[3].value.is_nan());
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in ["x", "x{a=\"1\"", "x{a=1} 2", "x 1 2 3", "x one", "{a=\"1\"} 2", "x 1 notatime"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quantiles_interpolate_like_promql() {
        let buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
        assert!((histogram_quantile(0.5, &buckets).unwrap() - 0.1).abs() < 1e-9);
        assert!((histogram_quantile(0.7, &buckets).unwrap() - 0.3).abs() < 1e-9);
        assert!((histogram_quantile(0.95, &buckets).unwrap() - 0.75).abs() < 1e-9);
        let overflow = [(0.1, 0.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.5, &overflow), Some(0.1));
        assert_eq!(histogram_quantile(0.5, &[(f64::INFINITY, 0.0)]), None);
    }
}
