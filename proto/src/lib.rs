//! The Myelin wire contract (package `myelin.v1`), generated from `myelin/v1/myelin.proto`.
#![forbid(unsafe_code)]

/// Generated messages, service clients and servers of package `myelin.v1`.
pub mod v1 {
    tonic::include_proto!("myelin.v1");
}

/// Encoded `FileDescriptorSet` of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("myelin_descriptor");
