//! Reads one resident ID number per line on stdin and prints kycq's verdict on each, one line per
//! input: `ok <normalised number>` or `refused <reason>`. The date that counts as today is the
//! first argument (`YYYY-MM-DD`), so a run can be repeated. Used by `tests/stdnum/run.sh` to
//! compare kycq's validation with python-stdnum's `stdnum.cn.ric`.
//!
//! ```text
//! echo 11010519491231002X | cargo run --example id_verdicts -- 2026-12-02
//! ```

use std::io::{self, BufRead, BufWriter, Write};

use chrono::NaiveDate;
use kycq::check::IdNumber;

fn main() -> io::Result<()> {
    let today = std::env::args()
        .nth(1)
        .and_then(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok())
        .unwrap_or_else(|| {
            eprintln!("usage: id_verdicts YYYY-MM-DD < numbers");
            std::process::exit(2);
        });
    let mut out = BufWriter::new(io::stdout().lock());
    for line in io::stdin().lock().lines() {
        match IdNumber::parse(&line?, today) {
            Ok(id) => writeln!(out, "ok {}", id.expose())?,
            Err(e) => writeln!(out, "refused {e}")?,
        }
    }
    out.flush()
}
