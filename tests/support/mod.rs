pub mod defect_server;
