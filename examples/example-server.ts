/**
 * Where the remote examples connect: the throwaway server named by THREADBARE_SSHD_STATE
 * (`examples/run-all.ts` starts one; or `tests-remote/sshd-server.sh start`). A real program would
 * write its own host, user and key here.
 */
import { Layer } from "effect"
import { Settings, Ssh } from "../src/index.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"

export const server = readServerFromEnv()

/** Settings for the example server, plus the SSH connection service. */
export const exampleLayer = Layer.mergeAll(
  Ssh.layer,
  Settings.layer({
    host: `${server.user}@${server.host}:${server.port}`,
    keyFile: server.keyPath,
    knownHostsFile: server.knownHostsPath,
    hostKeyPolicy: "strict",
    sshConfigFile: false
  })
)
