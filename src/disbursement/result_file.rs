//! The result file an office keeps for its records: one row per line with what happened, in
//! the encoding and header language the office uploaded, ID numbers masked.

use std::io::Write;

use crate::app::App;
use crate::domain::access::Principal;
use crate::domain::batch::{Line, LineStatus, TransferFailure};
use crate::domain::disbursement::BatchEncoding;
use crate::domain::ids::BatchId;
use crate::error::{Error, Result};

/// Lines read per page while writing, so memory stays flat for any batch size: a stored chunk,
/// so each page reads and decodes one.
const PAGE_LINES: u32 = super::upload::LINE_CHUNK;

const HEADERS_ZH: [&str; 10] =
    ["序号", "原行号", "姓名", "身份证号", "钱包编号", "金额", "状态", "失败代码", "说明", "运营机构流水号"];
const HEADERS_EN: [&str; 10] =
    ["seq", "file_line", "name", "citizen_id", "wallet_id", "amount", "status", "fail_code", "advice", "transfer_no"];

fn status_text(status: LineStatus, chinese: bool) -> &'static str {
    match (status, chinese) {
        (LineStatus::Succeeded, true) => "成功",
        (LineStatus::Failed, true) => "失败",
        (LineStatus::Returned, true) => "已退回",
        (LineStatus::Pending | LineStatus::Sending, true) => "处理中",
        (status, false) => status.as_str(),
    }
}

/// Quotes a field when CSV needs it (comma, quote, line break) or when a spreadsheet would
/// run it as a formula.
fn csv_field(text: &str) -> String {
    let risky = text.starts_with(['=', '+', '-', '@']);
    if risky || text.contains([',', '"', '\n', '\r']) {
        let prefix = if risky { "'" } else { "" };
        format!("\"{prefix}{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn row(line: &Line, chinese: bool) -> String {
    let advice = match (&line.fail_code, line.reissued_as_seq) {
        (_, Some(seq)) if chinese => format!("已重新发放（序号{seq}）"),
        (_, Some(seq)) => format!("re-issued as seq {seq}"),
        // The operator's own words on why the money came back, then what to do.
        (_, None) if line.returned.is_some() => {
            let reason = line.returned.as_ref().map(|r| r.reason.as_str()).unwrap_or_default();
            if chinese {
                format!("资金已退回：{reason}；核实钱包后可重新发放")
            } else {
                format!("money returned: {reason}; check the wallet, then re-issue")
            }
        }
        (Some(code), None) if chinese => TransferFailure::classify(code).advice_zh().to_owned(),
        (Some(code), None) => format!("{:?}", TransferFailure::classify(code)),
        (None, None) => String::new(),
    };
    let fields = [
        line.seq.to_string(),
        line.file_line.to_string(),
        line.payee_name.clone(),
        line.citizen_id_masked.clone(),
        line.wallet_id.as_str().to_owned(),
        line.amount.to_string(),
        status_text(line.status, chinese).to_owned(),
        line.fail_code.clone().unwrap_or_default(),
        advice,
        line.transfer_no.clone().unwrap_or_default(),
    ];
    let mut text = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
    text.push_str("\r\n");
    text
}

impl App {
    /// Writes the result file of a batch to `out`; returns the encoding used.
    pub async fn write_batch_result<W: Write>(
        &self,
        principal: &Principal,
        id: &BatchId,
        out: &mut W,
    ) -> Result<BatchEncoding> {
        let batch = self.batch(principal, id).await?;
        let io = |e: std::io::Error| Error::Internal(e.into());
        let encoding = batch.encoding;
        let chinese = batch.chinese_headers;
        out.write_all(encoding.preamble()).map_err(io)?;
        let header = if chinese { HEADERS_ZH } else { HEADERS_EN }.join(",") + "\r\n";
        out.write_all(&encoding.encode(&header)).map_err(io)?;
        let mut after = 0;
        loop {
            let page = self.store.batch_lines(&batch.id, after, PAGE_LINES).await?;
            for line in &page {
                out.write_all(&encoding.encode(&row(line, chinese))).map_err(io)?;
            }
            match page.last() {
                Some(last) if page.len() as u32 == PAGE_LINES => after = last.seq,
                _ => break,
            }
        }
        Ok(encoding)
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn fields_are_quoted_when_csv_or_spreadsheets_need_it() {
        assert_eq!(csv_field("张三"), "张三");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+1"), "\"'=1+1\"");
    }
}
