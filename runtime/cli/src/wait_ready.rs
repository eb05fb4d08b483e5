//! `eventplug wait-ready`: waits until a sidecar's admin listener answers `/readyz` with 200.
//!
//! On Kubernetes before native sidecars (1.29), the sidecar is an ordinary container listed before
//! event-handler; kubelet starts the next container only once this container's postStart hook
//! has returned. So a postStart hook running `eventplug wait-ready` keeps event-handler from
//! sending its first event before the sidecar can take it. A plain HTTP/1.1 request per attempt
//! over a fresh connection: the admin listener speaks plain HTTP and the answer is one line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long to wait between attempts.
const INTERVAL: Duration = Duration::from_millis(200);
/// The most of an answer that is read (`/readyz` answers one line of at most about 2 KiB).
const MAX_ANSWER: u64 = 16 << 10;

/// Arguments of `eventplug wait-ready`.
#[derive(Debug, clap::Args)]
pub struct WaitReadyArgs {
    /// The sidecar's admin listener (`admin.address`).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9090")]
    address: String,
    /// Give up after this long (Go duration syntax: `500ms`, `60s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = eventplug_contract::Duration::parse)]
    timeout: eventplug_contract::Duration,
}

/// Polls `/readyz` until it answers 200 (exit 0) or the timeout passes (exit 1, printing the last
/// answer or why there was none).
pub fn wait_ready(args: WaitReadyArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let deadline = started + args.timeout.get();
    let mut last;
    loop {
        last = match probe(&args.address, deadline) {
            Ok((200, _)) => {
                eprintln!(
                    "eventplug wait-ready: {} is ready after {:.1?}",
                    args.address,
                    started.elapsed()
                );
                return Ok(ExitCode::SUCCESS);
            }
            Ok((status, body)) => format!("{status} {}", body.trim()),
            Err(error) => error,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(INTERVAL.min(left));
        // No attempt that could only say the time is up: the last real answer is what counts.
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!(
        "eventplug wait-ready: http://{}/readyz did not answer 200 within {:?}; the last answer: {last}",
        args.address,
        args.timeout.get()
    );
    Ok(ExitCode::FAILURE)
}

/// One `GET /readyz`, bounded by `deadline`: the status and body, or why there is none.
fn probe(address: &str, deadline: Instant) -> Result<(u16, String), String> {
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "no answer before the deadline".to_owned())
    };
    let target: SocketAddr = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, remaining()?)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("{target} took the connection but did not answer in time")
        }
        _ => format!("talking to {target}: {e}"),
    };
    stream.set_write_timeout(Some(remaining()?)).map_err(io)?;
    stream
        .write_all(
            format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(io)?;
    stream.set_read_timeout(Some(remaining()?)).map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(io)?;
    parse_answer(&answer).ok_or_else(|| {
        format!(
            "{target} did not answer HTTP: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        )
    })
}

/// The status and body of an HTTP/1.1 answer read to its end (`Connection: close`): a body of
/// known length, or a chunked one.
fn parse_answer(answer: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.")?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.trim() == "chunked"
        })
    });
    if !chunked {
        return Some((status, body.to_owned()));
    }
    let mut joined = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            break;
        }
        joined.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
    Some((status, joined))
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn reads_a_body_of_known_length() {
        let answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 13\r\n\r\nshutting down";
        assert_eq!(
            parse_answer(answer),
            Some((503, "shutting down".to_owned()))
        );
    }

    #[test]
    fn reads_a_chunked_body() {
        let answer =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nrea\r\n2\r\ndy\r\n0\r\n\r\n";
        assert_eq!(parse_answer(answer), Some((200, "ready".to_owned())));
    }

    #[test]
    fn refuses_what_is_not_http() {
        assert_eq!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
        assert_eq!(parse_answer(b""), None);
    }
}
