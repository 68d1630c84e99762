//! Charts drawn on the server as inline SVG: nothing is fetched and no script runs. Amounts
//! are scaled to pixels in integer arithmetic, like every other use of money.

use maud::{Markup, html};

use super::layout::{Lang, yuan};

const DAILY_WIDTH_PX: i64 = 760;
const DAILY_HEIGHT_PX: i64 = 260;
const MARGIN_LEFT_PX: i64 = 96;
const MARGIN_RIGHT_PX: i64 = 44;
const MARGIN_TOP_PX: i64 = 16;
const MARGIN_BOTTOM_PX: i64 = 40;

/// One day of the daily chart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayPoint {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Net settlement of the day's newest run; `None` when the day was not reconciled.
    pub settled_fen: Option<i64>,
    /// Discrepancies that run found.
    pub discrepancies: u64,
}

/// `value / max` of `span` pixels, rounded down, without floating point.
fn scale(value: i64, max: i64, span: i64) -> i64 {
    if max <= 0 {
        return 0;
    }
    let scaled = i128::from(value.max(0)) * i128::from(span) / i128::from(max);
    i64::try_from(scaled).unwrap_or(span).min(span)
}

/// Settled amounts as bars (left axis, yuan) and discrepancies as red marks (right axis,
/// count), one column per day.
pub fn daily_settlement(points: &[DayPoint], lang: Lang) -> Markup {
    let plot_width = DAILY_WIDTH_PX - MARGIN_LEFT_PX - MARGIN_RIGHT_PX;
    let plot_height = DAILY_HEIGHT_PX - MARGIN_TOP_PX - MARGIN_BOTTOM_PX;
    let baseline = MARGIN_TOP_PX + plot_height;
    let max_fen = points.iter().filter_map(|p| p.settled_fen).map(i64::abs).max().unwrap_or(0).max(100);
    let max_count = i64::try_from(points.iter().map(|p| p.discrepancies).max().unwrap_or(0)).unwrap_or(i64::MAX).max(1);
    let columns = i64::try_from(points.len()).unwrap_or(1).max(1);
    let column_width = plot_width / columns;
    let bar_width = (column_width * 2 / 3).max(2);
    let title = lang.t("近 30 天结算金额与差错", "Settled amounts and discrepancies, last 30 days");
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {DAILY_WIDTH_PX} {DAILY_HEIGHT_PX}"))
                role="img" aria-label=(title) {
                title { (title) }
                line.axis x1=(MARGIN_LEFT_PX) y1=(baseline) x2=(MARGIN_LEFT_PX + plot_width) y2=(baseline) {}
                line.axis x1=(MARGIN_LEFT_PX) y1=(MARGIN_TOP_PX) x2=(MARGIN_LEFT_PX) y2=(baseline) {}
                text.tick x=(MARGIN_LEFT_PX - 6) y=(MARGIN_TOP_PX + 4) text-anchor="end" { (yuan(max_fen)) }
                text.tick x=(MARGIN_LEFT_PX - 6) y=(baseline) text-anchor="end" { (yuan(0)) }
                text.tick.bad x=(MARGIN_LEFT_PX + plot_width + 6) y=(MARGIN_TOP_PX + 4) { (max_count) }
                @for (i, point) in points.iter().enumerate() {
                    @let x = MARGIN_LEFT_PX + i64::try_from(i).unwrap_or(0) * column_width + (column_width - bar_width) / 2;
                    @if let Some(settled_fen) = point.settled_fen {
                        @let height = scale(settled_fen.abs(), max_fen, plot_height).max(1);
                        rect.settled.negative[settled_fen < 0] x=(x) y=(baseline - height) width=(bar_width) height=(height) {
                            title { (point.day) " " (yuan(settled_fen)) }
                        }
                    }
                    @if point.discrepancies > 0 {
                        @let count = i64::try_from(point.discrepancies).unwrap_or(i64::MAX);
                        @let y = baseline - scale(count, max_count, plot_height);
                        circle.discrepancy cx=(x + bar_width / 2) cy=(y) r="4" {
                            title { (point.day) " " (lang.t("差错", "discrepancies")) " " (point.discrepancies) }
                        }
                    }
                    @if i % 5 == 0 || i + 1 == points.len() {
                        text.tick x=(x + bar_width / 2) y=(baseline + 16) text-anchor="middle" {
                            (point.day.get(5..).unwrap_or(&point.day))
                        }
                    }
                }
            }
            figcaption {
                span.key.settled {} (lang.t("结算净额（左轴）", "net settlement (left axis)"))
                " "
                span.key.discrepancy {} (lang.t("差错笔数（右轴）", "discrepancies (right axis)"))
            }
        }
    }
}

/// One programme's budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetBar {
    pub label: String,
    pub budget_fen: i64,
    pub used_fen: i64,
}

const BUDGET_WIDTH_PX: i64 = 760;
const BUDGET_ROW_PX: i64 = 44;
const BUDGET_LABEL_PX: i64 = 200;
const BUDGET_VALUE_PX: i64 = 170;

/// Each programme's budget as a bar: the used part filled, the remaining part light.
pub fn budgets(bars: &[BudgetBar], lang: Lang) -> Markup {
    let height = BUDGET_ROW_PX * i64::try_from(bars.len()).unwrap_or(0) + 8;
    let bar_span = BUDGET_WIDTH_PX - BUDGET_LABEL_PX - BUDGET_VALUE_PX;
    let title = lang.t("预算使用情况", "Budget used and remaining");
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {BUDGET_WIDTH_PX} {height}"))
                role="img" aria-label=(title) {
                title { (title) }
                @for (i, bar) in bars.iter().enumerate() {
                    @let y = 4 + BUDGET_ROW_PX * i64::try_from(i).unwrap_or(0);
                    @let used = scale(bar.used_fen, bar.budget_fen, bar_span);
                    text.label x="0" y=(y + 20) { (bar.label) }
                    rect.remaining x=(BUDGET_LABEL_PX) y=(y + 6) width=(bar_span) height="20" {}
                    rect.used x=(BUDGET_LABEL_PX) y=(y + 6) width=(used) height="20" {
                        title { (lang.t("已用", "used")) " " (yuan(bar.used_fen)) }
                    }
                    text.tick x=(BUDGET_LABEL_PX + bar_span + 8) y=(y + 20) {
                        (yuan(bar.used_fen)) " / " (yuan(bar.budget_fen))
                    }
                }
            }
            figcaption {
                span.key.used {} (lang.t("已用", "used")) " "
                span.key.remaining {} (lang.t("剩余", "remaining"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_stays_within_the_span_and_never_goes_negative() {
        assert_eq!(scale(50, 100, 200), 100);
        assert_eq!(scale(100, 100, 200), 200);
        assert_eq!(scale(150, 100, 200), 200);
        assert_eq!(scale(-5, 100, 200), 0);
        assert_eq!(scale(5, 0, 200), 0);
        assert_eq!(scale(i64::MAX, i64::MAX, 200), 200);
    }

    #[test]
    fn a_chart_is_escaped_svg_with_one_bar_per_reconciled_day() {
        let points = vec![
            DayPoint { day: String::from("2026-11-01"), settled_fen: Some(12_345), discrepancies: 0 },
            DayPoint { day: String::from("2026-11-02"), settled_fen: None, discrepancies: 0 },
            DayPoint { day: String::from("2026-11-03"), settled_fen: Some(100), discrepancies: 2 },
        ];
        let svg = daily_settlement(&points, Lang::En).into_string();
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
        assert!(svg.contains("¥123.45"), "{svg}");
        let bars = budgets(
            &[BudgetBar { label: String::from("<高龄津贴>"), budget_fen: 1_000_000, used_fen: 250_000 }],
            Lang::Zh,
        )
        .into_string();
        assert!(bars.contains("&lt;高龄津贴&gt;"), "{bars}");
        assert!(bars.contains("¥2,500.00 / ¥10,000.00"), "{bars}");
    }
}
