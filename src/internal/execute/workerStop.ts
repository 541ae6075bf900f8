/**
 * Stopping the worker of a slot after one of its runs was interrupted, when the worker does not
 * show that it read the interruption.
 *
 * An interrupted run stops in its worker only when the worker reads the interrupt. A task that
 * loops on the CPU never lets it, and would keep its worker (and, in a shared pool, its slot)
 * busy for ever: a worker that does not answer a ping in time is stopped from outside, SIGTERM
 * first (a worker whose loop turns again stops its tasks cleanly on it), SIGKILL after
 * `Watchdog.killGraceMillis`. Its local commands run in process groups of their own, which its
 * death would leave running: they get the same signals (`Watchdog.stop`). The slot's protocol
 * starts a new worker for later runs.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as ChildProcess from "node:child_process"
import * as Watchdog from "../local/processTree.ts"
import type { Slot } from "./workerSlot.ts"

/**
 * After one of its runs is interrupted, a worker has `answerGrace` to answer a ping, then
 * `Watchdog.killGraceMillis` (1 s) between SIGTERM and SIGKILL: RELIABILITY.md states the sum
 * as the bound.
 */
const answerGrace = Duration.seconds(1)
// A stop that has not ended by then (a process table that cannot be read) falls back on
// killing the worker alone.
const stopBound = Duration.seconds(10)

const hasExited = (child: ChildProcess.ChildProcess): boolean =>
  child.exitCode !== null || child.signalCode !== null

const awaitExit = (child: ChildProcess.ChildProcess): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (hasExited(child)) return resume(Effect.void)
    const onExit = () => resume(Effect.void)
    child.once("exit", onExit)
    return Effect.sync(() => child.off("exit", onExit))
  })

const checkOrStop = (slot: Slot, child: ChildProcess.ChildProcess): Effect.Effect<void> =>
  Effect.gen(function*() {
    // A failed ping (the worker died, the client closed) is an answer too: nothing to kill.
    const answer = yield* slot.client.Ping().pipe(
      Effect.exit,
      Effect.interruptible,
      Effect.timeoutOption(answerGrace)
    )
    if (Option.isSome(answer)) return
    // Exited meanwhile: its pid may already belong to another process.
    if (child.pid !== undefined && !hasExited(child)) {
      yield* Effect.timeoutOption(Watchdog.stop(child.pid), stopBound)
    }
    yield* Effect.sync(() => {
      if (!hasExited(child)) child.kill("SIGKILL")
    })
    yield* awaitExit(child)
  })

/** Pings the slot's worker and stops it if it does not answer; shared by the runs interrupted on it. */
export const stopIfUnresponsive = (slot: Slot): Effect.Effect<void> =>
  Effect.gen(function*() {
    const child = slot.child
    if (child === undefined || hasExited(child)) return
    if (slot.stopping?.child !== child) {
      slot.stopping = {
        child,
        done: yield* Effect.cached(
          checkOrStop(slot, child).pipe(Effect.ensuring(Effect.sync(() => void (slot.stopping = undefined))))
        )
      }
    }
    yield* slot.stopping.done
  })
