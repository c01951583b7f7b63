//! Selection and scrolling for tables too long for the screen.

use std::ops::Range;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

/// Rows moved by one notch of the mouse wheel.
const WHEEL_STEP: usize = 3;

/// The selected row and the first row on screen. The body's position and height come from
/// the last frame, since only drawing knows the terminal's size.
#[derive(Debug, Default, Clone)]
pub(crate) struct TableNav {
    selected: usize,
    offset: usize,
    /// Where rows were last drawn, one row per line.
    body: Rect,
}

impl TableNav {
    pub fn selected(&self) -> usize {
        self.selected
    }

    pub fn select(&mut self, index: usize, len: usize) {
        self.selected = index.min(len.saturating_sub(1));
    }

    fn page(&self) -> usize {
        usize::from(self.body.height).max(1)
    }

    /// Moves the selection for navigation keys; false for any other key.
    pub fn handle_key(&mut self, key: &KeyEvent, len: usize) -> bool {
        let last = len.saturating_sub(1);
        let page = self.page();
        self.selected = match key.code {
            KeyCode::Down | KeyCode::Char('j') => self.selected.saturating_add(1).min(last),
            KeyCode::Up | KeyCode::Char('k') => self.selected.saturating_sub(1),
            KeyCode::PageDown => self.selected.saturating_add(page).min(last),
            KeyCode::Char('f') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.selected.saturating_add(page).min(last)
            }
            KeyCode::PageUp => self.selected.saturating_sub(page),
            KeyCode::Char('b') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.selected.saturating_sub(page)
            }
            KeyCode::Home | KeyCode::Char('g') => 0,
            KeyCode::End | KeyCode::Char('G') => last,
            _ => return false,
        };
        true
    }

    /// The wheel moves the selection; a click picks the row under the pointer. Returns the row
    /// clicked, so that a second click on the selected row can open it.
    pub fn handle_mouse(&mut self, mouse: &MouseEvent, len: usize) -> MouseOutcome {
        match mouse.kind {
            MouseEventKind::ScrollDown => {
                self.selected = (self.selected + WHEEL_STEP).min(len.saturating_sub(1));
                MouseOutcome::Moved
            }
            MouseEventKind::ScrollUp => {
                self.selected = self.selected.saturating_sub(WHEEL_STEP);
                MouseOutcome::Moved
            }
            MouseEventKind::Down(crossterm::event::MouseButton::Left) => {
                if !self.body.contains(Position::new(mouse.column, mouse.row)) {
                    return MouseOutcome::Outside;
                }
                let index = self.offset + usize::from(mouse.row - self.body.y);
                if index >= len {
                    return MouseOutcome::Outside;
                }
                let again = index == self.selected;
                self.selected = index;
                if again {
                    MouseOutcome::ClickedSelected
                } else {
                    MouseOutcome::Moved
                }
            }
            _ => MouseOutcome::Outside,
        }
    }

    /// Records where rows go this frame and returns which rows to build: only those on screen,
    /// scrolled so the selection is visible.
    pub fn layout(&mut self, body: Rect, len: usize) -> Range<usize> {
        self.body = body;
        let height = usize::from(body.height);
        self.selected = self.selected.min(len.saturating_sub(1));
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if height > 0 && self.selected >= self.offset + height {
            self.offset = self.selected + 1 - height;
        }
        self.offset = self.offset.min(len.saturating_sub(height));
        self.offset..(self.offset + height).min(len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MouseOutcome {
    Outside,
    Moved,
    ClickedSelected,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::{KeyEventKind, KeyEventState, MouseButton};

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent {
            code,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        }
    }

    fn click(column: u16, row: u16) -> MouseEvent {
        MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column,
            row,
            modifiers: KeyModifiers::NONE,
        }
    }

    #[test]
    fn keys_move_within_bounds() {
        let mut nav = TableNav::default();
        nav.layout(Rect::new(0, 0, 10, 5), 100);
        assert!(nav.handle_key(&key(KeyCode::Up), 100));
        assert_eq!(nav.selected(), 0);
        nav.handle_key(&key(KeyCode::Char('j')), 100);
        assert_eq!(nav.selected(), 1);
        nav.handle_key(&key(KeyCode::PageDown), 100);
        assert_eq!(nav.selected(), 6);
        nav.handle_key(&key(KeyCode::End), 100);
        assert_eq!(nav.selected(), 99);
        nav.handle_key(&key(KeyCode::Down), 100);
        assert_eq!(nav.selected(), 99);
        nav.handle_key(&key(KeyCode::PageUp), 100);
        assert_eq!(nav.selected(), 94);
        nav.handle_key(&key(KeyCode::Home), 100);
        assert_eq!(nav.selected(), 0);
        assert!(!nav.handle_key(&key(KeyCode::Char('x')), 100));
    }

    #[test]
    fn layout_scrolls_to_keep_the_selection_visible() {
        let mut nav = TableNav::default();
        let body = Rect::new(0, 2, 10, 5);
        assert_eq!(nav.layout(body, 3), 0..3);
        nav.select(42, 100);
        assert_eq!(nav.layout(body, 100), 38..43);
        nav.select(40, 100);
        assert_eq!(nav.layout(body, 100), 38..43);
        nav.select(10, 100);
        assert_eq!(nav.layout(body, 100), 10..15);
        // The list shrank under the selection.
        assert_eq!(nav.layout(body, 4), 0..4);
        assert_eq!(nav.selected(), 3);
    }

    #[test]
    fn clicks_select_then_report_the_second_click() {
        let mut nav = TableNav::default();
        nav.layout(Rect::new(0, 2, 10, 5), 100);
        assert_eq!(nav.handle_mouse(&click(3, 4), 100), MouseOutcome::Moved);
        assert_eq!(nav.selected(), 2);
        assert_eq!(
            nav.handle_mouse(&click(3, 4), 100),
            MouseOutcome::ClickedSelected
        );
        assert_eq!(nav.handle_mouse(&click(3, 1), 100), MouseOutcome::Outside);
        assert_eq!(nav.handle_mouse(&click(3, 5), 3), MouseOutcome::Outside);
        let wheel = MouseEvent {
            kind: MouseEventKind::ScrollDown,
            ..click(0, 0)
        };
        nav.handle_mouse(&wheel, 100);
        assert_eq!(nav.selected(), 5);
    }
}
