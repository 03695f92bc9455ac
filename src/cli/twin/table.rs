//! Aligned plain-text tables: a header row and columns two spaces apart, numbers
//! right-aligned, no trailing spaces.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: padded on the right.
    Left,
    /// Numbers: padded on the left.
    Right,
}

/// A table being filled row by row.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column headers and alignment.
    columns: Vec<(String, Align)>,
    /// The rows, each as wide as `columns`.
    rows: Vec<Vec<String>>,
}

/// Space between two columns.
const GAP: &str = "  ";

impl Table {
    /// An empty table with these columns.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns
                .iter()
                .map(|(name, align)| (name.to_string(), *align))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.columns.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as lines, each ending in a newline.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                self.rows
                    .iter()
                    .map(|row| width(&row[i]))
                    .chain([width(name)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(name, _)| name.clone()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                let pad = widths[i].saturating_sub(width(cell));
                match self.columns[i].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Display width of a cell, counting characters (cells hold no wide or combining
/// characters the CLI itself writes; a node's odd names only misalign, never break).
fn width(cell: &str) -> usize {
    cell.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_and_trims_line_ends() {
        let mut table = Table::new(&[
            ("PATH", Align::Left),
            ("HEALTH", Align::Right),
            ("NOTE", Align::Left),
        ]);
        table.row(vec!["acme/a".into(), "97%".into(), String::new()]);
        table.row(vec![
            "acme/plant-b/x".into(),
            "100%".into(),
            "ok".into(),
            "dropped".into(),
        ]);
        table.row(vec!["é".into()]);
        assert_eq!(
            table.render(),
            "PATH            HEALTH  NOTE\n\
             acme/a             97%\n\
             acme/plant-b/x    100%  ok\n\
             é\n"
        );
    }
}
