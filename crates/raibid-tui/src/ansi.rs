//! A small reader for the escape sequences build tools print.
//!
//! Compilers and test runners colour their output with SGR sequences (`ESC [ ... m`); showing
//! those colours is most of what makes a log readable. Everything else a program may emit
//! (cursor movement, window titles, hyperlinks) means nothing in a scrolling log view and is
//! dropped rather than printed as garbage. The style in force carries from one line to the
//! next, as it does in a terminal.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

/// The sixteen basic colours, in SGR order. Named rather than indexed so that they are sent
/// to the terminal as the same basic codes the build printed, in the user's own theme.
const PALETTE: [Color; 16] = [
    Color::Black,
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::Gray,
    Color::DarkGray,
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightCyan,
    Color::White,
];

/// Columns between tab stops, as in a terminal.
const TAB_WIDTH: usize = 8;

/// One line of output, rendered and as plain text (for searching).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StyledLine {
    pub line: Line<'static>,
    pub plain: String,
}

/// Turns raw lines into styled ones, remembering the style in force between calls.
#[derive(Debug, Default, Clone)]
pub(crate) struct AnsiParser {
    style: Style,
}

impl AnsiParser {
    /// Parses one line (without its `\n`). A `\r` inside the line starts it over, as a
    /// progress bar redrawing itself would on a terminal; only what follows the last one stays.
    pub fn parse_line(&mut self, raw: &str) -> StyledLine {
        let mut spans: Vec<Span<'static>> = Vec::new();
        let mut plain = String::new();
        let mut text = String::new();
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\x1b' => {
                    flush(&mut spans, &mut text, self.style);
                    match chars.next() {
                        Some('[') => {
                            let mut params = String::new();
                            let mut terminator = None;
                            for c in chars.by_ref() {
                                if ('\x40'..='\x7e').contains(&c) {
                                    terminator = Some(c);
                                    break;
                                }
                                params.push(c);
                            }
                            if terminator == Some('m') {
                                self.apply_sgr(&params);
                            }
                        }
                        Some(']') => {
                            // OSC: ends at BEL or at ESC '\'.
                            while let Some(c) = chars.next() {
                                if c == '\x07' {
                                    break;
                                }
                                if c == '\x1b' {
                                    chars.next_if_eq(&'\\');
                                    break;
                                }
                            }
                        }
                        // Character set designation: one more character names the set.
                        Some('(' | ')' | '*' | '+') => {
                            chars.next();
                        }
                        // Two-character sequences (keypad modes, resets).
                        _ => {}
                    }
                }
                // A line ending in `\r\n` is not a redraw.
                '\r' if chars.peek().is_none() => {}
                '\r' => {
                    spans.clear();
                    text.clear();
                    plain.clear();
                }
                '\t' => {
                    let width = TAB_WIDTH - plain.chars().count() % TAB_WIDTH;
                    for _ in 0..width {
                        text.push(' ');
                        plain.push(' ');
                    }
                }
                c if c.is_control() => {}
                c => {
                    text.push(c);
                    plain.push(c);
                }
            }
        }
        flush(&mut spans, &mut text, self.style);
        StyledLine {
            line: Line::from(spans),
            plain,
        }
    }

    fn apply_sgr(&mut self, params: &str) {
        // Colon-separated sub-parameters (`38:2:r:g:b`) read the same as semicolons here.
        let mut codes = params.split([';', ':']).map(|p| {
            if p.is_empty() {
                Some(0)
            } else {
                p.parse::<u16>().ok()
            }
        });
        while let Some(code) = codes.next() {
            let Some(code) = code else {
                // A malformed parameter: give up on the rest of this sequence.
                return;
            };
            let s = &mut self.style;
            match code {
                0 => *s = Style::default(),
                1 => *s = s.add_modifier(Modifier::BOLD),
                2 => *s = s.add_modifier(Modifier::DIM),
                3 => *s = s.add_modifier(Modifier::ITALIC),
                4 => *s = s.add_modifier(Modifier::UNDERLINED),
                7 => *s = s.add_modifier(Modifier::REVERSED),
                9 => *s = s.add_modifier(Modifier::CROSSED_OUT),
                22 => *s = s.remove_modifier(Modifier::BOLD | Modifier::DIM),
                23 => *s = s.remove_modifier(Modifier::ITALIC),
                24 => *s = s.remove_modifier(Modifier::UNDERLINED),
                27 => *s = s.remove_modifier(Modifier::REVERSED),
                29 => *s = s.remove_modifier(Modifier::CROSSED_OUT),
                30..=37 => *s = s.fg(PALETTE[usize::from(code - 30)]),
                38 => match extended_color(&mut codes) {
                    Some(c) => *s = s.fg(c),
                    None => return,
                },
                39 => s.fg = None,
                40..=47 => *s = s.bg(PALETTE[usize::from(code - 40)]),
                48 => match extended_color(&mut codes) {
                    Some(c) => *s = s.bg(c),
                    None => return,
                },
                49 => s.bg = None,
                90..=97 => *s = s.fg(PALETTE[usize::from(code - 90 + 8)]),
                100..=107 => *s = s.bg(PALETTE[usize::from(code - 100 + 8)]),
                _ => {}
            }
        }
    }
}

/// The colour after `38`/`48`: `5;n` (256 colours) or `2;r;g;b` (true colour).
fn extended_color(codes: &mut impl Iterator<Item = Option<u16>>) -> Option<Color> {
    let mut byte = || codes.next().flatten().and_then(|v| u8::try_from(v).ok());
    match byte()? {
        5 => Some(Color::Indexed(byte()?)),
        2 => Some(Color::Rgb(byte()?, byte()?, byte()?)),
        _ => None,
    }
}

fn flush(spans: &mut Vec<Span<'static>>, text: &mut String, style: Style) {
    if !text.is_empty() {
        spans.push(Span::styled(std::mem::take(text), style));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> StyledLine {
        AnsiParser::default().parse_line(raw)
    }

    #[test]
    fn plain_text_passes_through() {
        let l = parse("hello world");
        assert_eq!(l.plain, "hello world");
        assert_eq!(l.line, Line::from(vec![Span::raw("hello world")]));
    }

    #[test]
    fn colours_bold_and_reset() {
        let l = parse("\x1b[1;31merror\x1b[0m: bad \x1b[32mok\x1b[m.");
        assert_eq!(l.plain, "error: bad ok.");
        assert_eq!(
            l.line.spans,
            vec![
                Span::styled(
                    "error",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
                ),
                Span::raw(": bad "),
                Span::styled("ok", Style::new().fg(Color::Green)),
                Span::raw("."),
            ]
        );
    }

    #[test]
    fn bright_256_and_true_colours() {
        let l = parse("\x1b[91ma\x1b[38;5;208mb\x1b[48;2;1;2;3mc");
        assert_eq!(l.line.spans[0].style.fg, Some(Color::LightRed));
        assert_eq!(l.line.spans[1].style.fg, Some(Color::Indexed(208)));
        assert_eq!(l.line.spans[2].style.bg, Some(Color::Rgb(1, 2, 3)));
        assert_eq!(l.line.spans[2].style.fg, Some(Color::Indexed(208)));
    }

    #[test]
    fn style_carries_to_the_next_line() {
        let mut p = AnsiParser::default();
        p.parse_line("\x1b[33mwarning: start");
        let next = p.parse_line("continued\x1b[39m");
        assert_eq!(next.line.spans[0].style.fg, Some(Color::Yellow));
        assert_eq!(p.parse_line("after").line.spans[0].style, Style::default());
    }

    #[test]
    fn other_sequences_are_dropped() {
        let l = parse("\x1b]0;title\x07a\x1b[2Kb\x1b]8;;http://x\x1b\\c\x1b(Bd\x08");
        assert_eq!(l.plain, "abcd");
    }

    #[test]
    fn carriage_return_keeps_the_last_redraw() {
        assert_eq!(parse(" 10%\r 50%\r100% done").plain, "100% done");
        assert_eq!(parse("windows line\r").plain, "windows line");
    }

    #[test]
    fn tabs_expand_to_stops() {
        assert_eq!(parse("a\tb").plain, "a       b");
        assert_eq!(parse("12345678\tx").plain, "12345678        x");
    }

    #[test]
    fn malformed_parameters_do_not_panic() {
        assert_eq!(parse("\x1b[38;5mx\x1b[99999my\x1b[").plain, "xy");
    }
}
