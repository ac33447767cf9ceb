// This file exists so that `gateway-user` can name this crate as a build dependency
// (cargo then rebuilds the daemon when the eBPF sources change).
#![no_std]
