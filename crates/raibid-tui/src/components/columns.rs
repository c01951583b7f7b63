//! Choosing which table columns fit the terminal.
//!
//! Tables lose their least useful columns first as the terminal narrows, so that what
//! identifies a row (a job's id and status, an agent's name) survives on any width.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Row, Table};

/// Space between columns, as the tables are drawn.
pub(crate) const SPACING: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ColumnSpec {
    /// Narrowest useful width.
    pub min: u16,
    /// 0: always shown. Otherwise columns with higher ranks go first.
    pub drop_rank: u8,
}

/// A table's column: its title and how much it matters when space runs out.
pub(crate) trait TableColumn: Copy + PartialEq + 'static {
    fn header(self) -> &'static str;
    fn spec(self) -> ColumnSpec;
}

/// The columns of `all` that fit in `width`, in order.
pub(crate) fn kept<C: TableColumn>(all: &[C], width: u16) -> Vec<C> {
    let specs: Vec<ColumnSpec> = all.iter().map(|c| c.spec()).collect();
    fit(&specs, width).into_iter().map(|i| all[i]).collect()
}

/// Where the rows go: `inner` below the header line.
pub(crate) fn body(inner: Rect) -> Rect {
    Rect {
        y: inner.y.saturating_add(1),
        height: inner.height.saturating_sub(1),
        ..inner
    }
}

/// Draws `rows` under a bold header of `kept`; `fill` takes the width the others leave.
pub(crate) fn draw_table<'a, C: TableColumn>(
    frame: &mut Frame,
    area: Rect,
    kept: &[C],
    fill: C,
    rows: impl IntoIterator<Item = Row<'a>>,
) {
    let widths: Vec<Constraint> = kept
        .iter()
        .map(|&c| {
            if c == fill {
                Constraint::Fill(1)
            } else {
                Constraint::Length(c.spec().min)
            }
        })
        .collect();
    let header =
        Row::new(kept.iter().map(|c| c.header())).style(Style::new().add_modifier(Modifier::BOLD));
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .column_spacing(SPACING),
        area,
    );
}

/// Indices (in order) of the columns that fit in `width`.
pub(crate) fn fit(columns: &[ColumnSpec], width: u16) -> Vec<usize> {
    let mut kept: Vec<usize> = (0..columns.len()).collect();
    loop {
        let needed: u32 = kept.iter().map(|&i| u32::from(columns[i].min)).sum::<u32>()
            + u32::from(SPACING) * kept.len().saturating_sub(1) as u32;
        if needed <= u32::from(width) {
            return kept;
        }
        let Some(victim) = kept
            .iter()
            .enumerate()
            .filter(|(_, i)| columns[**i].drop_rank > 0)
            .max_by_key(|(_, i)| columns[**i].drop_rank)
            .map(|(pos, _)| pos)
        else {
            return kept;
        };
        kept.remove(victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: u16, drop_rank: u8) -> ColumnSpec {
        ColumnSpec { min, drop_rank }
    }

    #[test]
    fn drops_highest_ranks_first_and_keeps_the_essential() {
        let cols = [spec(10, 0), spec(10, 2), spec(10, 1), spec(10, 0)];
        assert_eq!(fit(&cols, 43), vec![0, 1, 2, 3]);
        assert_eq!(fit(&cols, 42), vec![0, 2, 3]);
        assert_eq!(fit(&cols, 25), vec![0, 3]);
        assert_eq!(fit(&cols, 5), vec![0, 3]);
    }
}
