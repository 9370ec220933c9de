//! `models`: every trained churn model, its body as JSON; the newest one
//! scores.

use bowtie_runtime::Instant;
use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{execute, internal};
use sea_orm::sea_query::Query;
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder};

use super::entity::model::{Column as M, Entity as Models};

/// Stores a trained model.
pub async fn save_model<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    trained_at: Instant,
    body: &str,
) -> Result<(), Error> {
    let insert = Query::insert()
        .into_table(Models)
        .columns([M::Id, M::TrainedAt, M::Body])
        .values([id.into(), trained_at.micros().into(), body.into()])
        .map_err(internal)?
        .to_owned();
    execute(conn, &insert).await
}

/// The newest model's body.
pub async fn latest_model<C: ConnectionTrait>(conn: &C) -> Result<Option<String>, Error> {
    Ok(Models::find()
        .order_by_desc(M::TrainedAt)
        .order_by_desc(M::Id)
        .one(conn)
        .await?
        .map(|m| m.body))
}
