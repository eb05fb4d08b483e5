//! The sidecar's answers: one line of text saying what happened and, for errors, what to do.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

/// The longest answer text, in bytes; longer reasons (a module's compile error) are cut.
const MAX_ANSWER_BYTES: usize = 2048;

/// `text` as one line: each run of whitespace or control characters that holds a line break or
/// another control character becomes one space, and the text is cut at `MAX_ANSWER_BYTES` with `…`.
pub(crate) fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len().min(MAX_ANSWER_BYTES));
    let mut gap = false;
    for c in text.trim().chars() {
        if c.is_control() || (gap && c.is_whitespace()) {
            gap = true;
            continue;
        }
        if gap {
            while line.ends_with(' ') {
                line.pop();
            }
            line.push(' ');
            gap = false;
        }
        if line.len() + c.len_utf8() > MAX_ANSWER_BYTES {
            line.push('…');
            break;
        }
        line.push(c);
    }
    line
}

/// A response with a one-line text body.
pub(crate) fn text(status: StatusCode, body: impl AsRef<str>) -> Response<Full<Bytes>> {
    let mut body = one_line(body.as_ref());
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::{MAX_ANSWER_BYTES, one_line};

    #[test]
    fn answers_are_one_bounded_line() {
        assert_eq!(
            one_line(
                "error: expected `)`\n --> m.wat:3:5\n  |\n3 |     i32.const oops\r\n  |  ^\n"
            ),
            "error: expected `)` --> m.wat:3:5 | 3 |     i32.const oops |  ^"
        );
        assert_eq!(one_line("a\u{0}b\tc"), "a b c");
        assert_eq!(one_line("plain"), "plain");
        let long = one_line(&"é".repeat(5000));
        assert!(long.len() <= MAX_ANSWER_BYTES + '…'.len_utf8() && long.ends_with('…'));
    }
}
