// bb_runner: with REAPI_BB_CHROOT, chroot(2) into each input root as
// BuildStream requires (Buildbarn mounts nothing there: no /proc, no
// /dev/shm); without it, Buildbarn's default: commands run in the build
// directory on the worker's own filesystem.
local common = import 'common.libsonnet';
{
  buildDirectoryPath: common.dir + '/build',
  grpcServers: [{
    listenPaths: [common.listen.runner],
    authenticationPolicy: common.allow,
  }],
  chrootIntoInputRoot: common.chroot,
}
