/**
 * vitest global setup: one throwaway OpenSSH server (16 loopback hosts) for the whole test run.
 *
 * Test files find it with `readServerFromEnv()` from `tests-remote/server.ts`: the state dir is put in
 * `process.env.THREADBARE_SSHD_STATE` here, before vitest starts its workers, which inherit it; it is
 * also provided as `inject("threadbareSshdState")`.
 *
 * A server already named by THREADBARE_SSHD_STATE (started by hand with `tests-remote/sshd-server.sh`)
 * is used as it is and left running.
 *
 * Beside it, a Dropbear server (`tests-remote/dropbear-server.ts`, found with `readDropbearFromEnv()`
 * through THREADBARE_DROPBEAR_STATE) authorizing the same client key. It needs root; in CI a missing
 * Dropbear is a failure, elsewhere its cases are skipped.
 */
import type { TestProject } from "vitest/node"
import {
  DROPBEAR_STATE_ENV,
  dropbearAvailable,
  type DropbearServer,
  readDropbear,
  startDropbear
} from "../tests-remote/dropbear-server.ts"
import { findSshd, readServer, type Server, startServer, STATE_ENV } from "../tests-remote/server.ts"

declare module "vitest" {
  export interface ProvidedContext {
    threadbareSshdState: string
    threadbareDropbearState: string
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const existing = await runningServer()
  if (existing !== undefined) {
    project.provide("threadbareSshdState", existing.stateDir)
    const stopDropbear = await setupDropbear(project, existing.keyPath)
    return stopDropbear
  }

  // Remote tests are never skipped for want of sshd, in CI or not: a missing server is a failure.
  if (findSshd() === undefined) {
    throw new Error(
      "The remote tests need an OpenSSH server (sshd), which is not installed: apt-get install openssh-server" +
        (process.env["CI"] ? " (CI must install it)" : "")
    )
  }

  const server = await startServer({ hostCount: 16 })
  process.env[STATE_ENV] = server.stateDir
  project.provide("threadbareSshdState", server.stateDir)

  // If vitest dies without running the teardown, still leave no sshd behind.
  const onExit = () => server.stopSync()
  process.once("exit", onExit)
  const stopDropbear = await setupDropbear(project, server.keyPath).catch(async (error: unknown) => {
    await server.stop()
    throw error
  })
  return async () => {
    process.off("exit", onExit)
    await stopDropbear()
    await server.stop()
  }
}

const setupDropbear = async (project: TestProject, keyPath: string): Promise<() => Promise<void>> => {
  const named = process.env[DROPBEAR_STATE_ENV]
  if (named !== undefined && named !== "") {
    const server = readDropbear(named)
    if (!(await server.isRunning())) {
      throw new Error(
        `${DROPBEAR_STATE_ENV}=${named} names a server that is not running; unset it or start it again`
      )
    }
    project.provide("threadbareDropbearState", named)
    return async () => {}
  }
  if (!dropbearAvailable()) {
    if (process.env["CI"]) {
      throw new Error("The remote tests need Dropbear as root in CI: apt-get install dropbear-bin")
    }
    return async () => {}
  }
  const server: DropbearServer = await startDropbear(keyPath)
  process.env[DROPBEAR_STATE_ENV] = server.stateDir
  project.provide("threadbareDropbearState", server.stateDir)
  const onExit = () => server.stopSync()
  process.once("exit", onExit)
  return async () => {
    process.off("exit", onExit)
    await server.stop()
  }
}

const runningServer = async (): Promise<Server | undefined> => {
  const stateDir = process.env[STATE_ENV]
  if (stateDir === undefined || stateDir === "") return undefined
  const server = readServer(stateDir)
  if (!(await server.isRunning())) {
    throw new Error(`${STATE_ENV}=${stateDir} names a server that is not running; unset it or start it again`)
  }
  return server
}
