//! A table for a terminal, in the manner of `ps` and `netstat`: columns
//! as wide as their widest cell, two spaces apart, numbers aligned right,
//! no borders, so that the output also reads well through `grep` and
//! `awk`.

/// Rows of text under a line of headers.
pub(crate) struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns: each a header, and whether its cells
    /// (numbers) are aligned right.
    pub(crate) fn new(columns: &[(&'static str, bool)]) -> Self {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    /// Append the table to `out`, a line per row after the headers.
    pub(crate) fn render(&self, out: &mut String) {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = w.saturating_sub(c.chars().count());
                if self.right.get(i).copied().unwrap_or(false) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_numbers_right() {
        let mut t = Table::new(&[("IP", false), ("UDP", true), ("LAST", false)]);
        t.rows
            .push(vec!["127.0.0.10".into(), "7".into(), "x".into()]);
        t.rows.push(vec!["::1".into(), "12345".into(), "y".into()]);
        let mut out = String::new();
        t.render(&mut out);
        assert_eq!(
            out,
            "IP            UDP  LAST\n127.0.0.10      7  x\n::1         12345  y\n"
        );
    }
}
