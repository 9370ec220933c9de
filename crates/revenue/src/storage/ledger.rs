//! The money-side rows: FX rates, invoices and each month's spend.

use std::collections::HashMap;

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::stored_uuid;

use super::entity::{fx_rate, invoice, monthly_spend};
use super::{CHUNK, keys, stored_account};
use crate::domain::{FxTable, Instant, Invoice, Minor, Month, Rate, SubscriptionId};

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
        external_id: Set(invoice.external_id.clone()),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

fn invoice_from_model(m: invoice::Model) -> Result<Invoice, Error> {
    Ok(Invoice {
        id: stored_uuid(&m.id)?,
        account_id: stored_account(&m.account_id)?,
        subscription_id: if m.subscription_id.is_empty() {
            None
        } else {
            Some(SubscriptionId(stored_uuid(&m.subscription_id)?))
        },
        currency: m.currency,
        amount: Minor(m.amount),
        due_at: Instant::from_micros(m.due_at),
        paid_at: m.paid_at.map(Instant::from_micros),
        external_id: m.external_id,
    })
}

/// The invoice the billing system knows as `external_id`, if recorded.
pub async fn invoice_by_external_id<C: ConnectionTrait>(
    conn: &C,
    external_id: &str,
) -> Result<Option<Invoice>, Error> {
    invoice::Entity::find()
        .filter(invoice::Column::ExternalId.eq(external_id))
        .one(conn)
        .await?
        .map(invoice_from_model)
        .transpose()
}

/// Records the payment of a stored invoice.
pub async fn mark_invoice_paid<C: ConnectionTrait>(
    conn: &C,
    invoice: &Invoice,
) -> Result<(), Error> {
    invoice::Entity::update_many()
        .col_expr(
            invoice::Column::PaidAt,
            invoice.paid_at.map(Instant::micros).into(),
        )
        .filter(invoice::Column::Id.eq(invoice.id.to_string()))
        .exec(conn)
        .await?;
    Ok(())
}

/// The invoices tied to a subscription, of each given account, by
/// subscription: what the past-due policy reads.
pub async fn subscription_invoices<C: ConnectionTrait>(
    conn: &C,
    accounts: &[crate::domain::AccountId],
) -> Result<HashMap<SubscriptionId, Vec<Invoice>>, Error> {
    let mut out: HashMap<SubscriptionId, Vec<Invoice>> = HashMap::new();
    for chunk in accounts.chunks(CHUNK) {
        let rows = invoice::Entity::find()
            .filter(invoice::Column::AccountId.is_in(keys(chunk)))
            .filter(invoice::Column::SubscriptionId.ne(""))
            .all(conn)
            .await?;
        for row in rows {
            let i = invoice_from_model(row)?;
            if let Some(sid) = i.subscription_id {
                out.entry(sid).or_default().push(i);
            }
        }
    }
    Ok(out)
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
