//! The money-side rows: FX rates, invoices and each month's spend.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};

use bowtie_runtime::error::Error;

use super::entity::{fx_rate, invoice, monthly_spend};
use crate::domain::{FxTable, Instant, Invoice, Minor, Month, Rate};

/// The FX table.
pub async fn fx_table<C: ConnectionTrait>(conn: &C, reporting: &str) -> Result<FxTable, Error> {
    let mut table = FxTable::new(reporting);
    for row in fx_rate::Entity::find().all(conn).await? {
        table.insert(
            &row.currency,
            Instant::from_micros(row.effective_at),
            Rate(row.rate_nanos),
        );
    }
    Ok(table)
}

/// Sets a rate.
pub async fn save_rate<C: ConnectionTrait>(
    conn: &C,
    currency: &str,
    from: Instant,
    rate: Rate,
) -> Result<(), Error> {
    use fx_rate::Column as F;
    fx_rate::Entity::insert(fx_rate::ActiveModel {
        currency: Set(currency.to_owned()),
        effective_at: Set(from.micros()),
        rate_nanos: Set(rate.0),
    })
    .on_conflict(
        OnConflict::columns([F::Currency, F::EffectiveAt])
            .update_column(F::RateNanos)
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Stores an invoice.
pub async fn insert_invoice<C: ConnectionTrait>(
    conn: &C,
    invoice: &Invoice,
    now: Instant,
) -> Result<(), Error> {
    invoice::Entity::insert(invoice::ActiveModel {
        id: Set(invoice.id.to_string()),
        account_id: Set(invoice.account_id.to_string()),
        subscription_id: Set(invoice
            .subscription_id
            .map(|s| s.to_string())
            .unwrap_or_default()),
        currency: Set(invoice.currency.clone()),
        amount: Set(invoice.amount.get()),
        due_at: Set(invoice.due_at.micros()),
        paid_at: Set(invoice.paid_at.map(Instant::micros)),
        created_at: Set(now.micros()),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Records a month's spend and gross margin.
pub async fn save_spend<C: ConnectionTrait>(
    conn: &C,
    month: Month,
    spend: Minor,
    margin_bp: i32,
) -> Result<(), Error> {
    use monthly_spend::Column as S;
    monthly_spend::Entity::insert(monthly_spend::ActiveModel {
        month: Set(month.index()),
        spend: Set(spend.get()),
        gross_margin_bp: Set(margin_bp),
    })
    .on_conflict(
        OnConflict::column(S::Month)
            .update_columns([S::Spend, S::GrossMarginBp])
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// A month's (spend, gross margin in basis points), when recorded.
pub async fn spend<C: ConnectionTrait>(
    conn: &C,
    month: Month,
) -> Result<Option<(Minor, i32)>, Error> {
    Ok(monthly_spend::Entity::find_by_id(month.index())
        .one(conn)
        .await?
        .map(|row| (Minor(row.spend), row.gross_margin_bp)))
}
