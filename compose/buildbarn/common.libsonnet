// Shared by every Buildbarn program's configuration. One source for two
// uses: `--cluster buildbarn` (the harness starts the programs itself) and
// compose/buildbarn.yml. What differs between them comes in through
// environment variables, which Buildbarn's programs expose to their
// configuration as std.extVar:
//
//   REAPI_BB_DIR     directory shared by all four programs: their unix
//                    sockets and bb_worker's build and cache directories
//   REAPI_BB_PUBLIC  extra TCP address bb_storage listens on for clients
//                    ('' for none: the harness uses the unix socket)
//   REAPI_BB_ISA     the ISA the worker advertises (BuildStream's naming)
//   REAPI_BB_CHROOT  'true': bb_runner chroots into each input root
//   REAPI_BB_JOBS    actions the worker runs at once
local dir = std.extVar('REAPI_BB_DIR');
local socket(name) = dir + '/' + name + '.sock';
{
  dir: dir,
  public: std.extVar('REAPI_BB_PUBLIC'),
  isa: std.extVar('REAPI_BB_ISA'),
  chroot: std.extVar('REAPI_BB_CHROOT') == 'true',
  jobs: std.parseInt(std.extVar('REAPI_BB_JOBS')),

  // Where each program listens (unix sockets under dir) ...
  listen: {
    storage: socket('storage'),
    schedulerClients: socket('scheduler-clients'),
    schedulerWorkers: socket('scheduler-workers'),
    runner: socket('runner'),
  },
  // ... and how the others reach it.
  address(path): 'unix://' + path,

  maximumMessageSizeBytes: 16 * 1024 * 1024,
  allow: { allow: {} },
}
