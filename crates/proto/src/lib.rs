//! The Rust side of Bowtie's protobuf contracts (`proto/bowtie/**`).
//!
//! One crate generates the code for every service so that shared types such as
//! `bowtie.common.v1.Money` are one Rust type everywhere, and so that one
//! descriptor set describes the whole API for server reflection.

/// Generated modules, one per protobuf package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod bowtie {
    /// Types shared by every service.
    pub mod common {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("bowtie.common.v1");
        }
    }
    /// The funnel service contract.
    pub mod funnel {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("bowtie.funnel.v1");
        }
    }
    /// The accounts service contract.
    pub mod accounts {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("bowtie.accounts.v1");
        }
    }
    /// The revenue service contract.
    pub mod revenue {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("bowtie.revenue.v1");
        }
    }
    /// The scoring service contract.
    pub mod scoring {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("bowtie.scoring.v1");
        }
    }
    /// The success service contract.
    pub mod success {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("bowtie.success.v1");
        }
    }
}

pub use bowtie::accounts::v1 as accounts;
pub use bowtie::common::v1 as common;
pub use bowtie::funnel::v1 as funnel;
pub use bowtie::revenue::v1 as revenue;
pub use bowtie::scoring::v1 as scoring;
pub use bowtie::success::v1 as success;

/// The encoded `FileDescriptorSet` of every Bowtie proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bowtie_descriptor");
