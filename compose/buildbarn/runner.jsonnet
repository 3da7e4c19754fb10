// bb_runner: chroot into each input root, as BuildStream requires. Buildbarn
// mounts nothing in it (no /proc, no /dev/shm): the suites report what that
// breaks (docs/buildbarn.md).
{
  buildDirectoryPath: '/worker/build',
  grpcServers: [{
    listenPaths: ['/worker/runner'],
    authenticationPolicy: { allow: {} },
  }],
  chrootIntoInputRoot: true,
}
