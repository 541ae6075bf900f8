/**
 * Defects made printable wherever the library prints or serialises one: on their way from a
 * worker to the parent (`workerServer`) and in the final report of `Threadbare.runMain`.
 *
 * Effect renders a defect that is not an `Error` through JSON, which drops a cycle without a
 * trace and shows a `Map` as `{}`. Here such a value becomes the text Node's `util.inspect`
 * gives for it: cycles marked (`<ref *1>`, `[Circular *1]`), depth bounded, never a stack
 * overflow.
 */
import * as Cause from "effect/Cause"
import * as Exit from "effect/Exit"
import { inspect } from "node:util"

const maxCauses = 32

// Plain JSON (no cycle, no Map, no class instance, no getter, at most 64 levels deep): it
// crosses as it is.
const isPlainJson = (value: unknown, ancestors: Set<object>): boolean => {
  if (value === null || typeof value === "string" || typeof value === "boolean") return true
  if (typeof value === "number") return Number.isFinite(value)
  if (typeof value !== "object" || ancestors.has(value) || ancestors.size > 64) return false
  const prototype = Object.getPrototypeOf(value)
  if (!Array.isArray(value) && prototype !== Object.prototype && prototype !== null) return false
  ancestors.add(value)
  // Descriptors, not values: a getter is never run (it could throw, or change something).
  const plain = Object.values(Object.getOwnPropertyDescriptors(value)).every((d) =>
    !d.enumerable || ("value" in d && isPlainJson(d.value, ancestors))
  )
  ancestors.delete(value)
  return plain
}

// A defect the parent can print as this process would: an Error keeps its name, message, stack
// and causes (a cause seen before in the chain becomes "[Circular]"); plain JSON stays itself;
// anything else (a cycle, a Map, a class instance) crosses as Node's own rendering of it, which
// marks cycles (`<ref *1>`, `[Circular *1]`) and stops at a depth, instead of being cut down to
// what JSON keeps (a cycle dropped, a Map as `{}`).
export const readableDefect = (defect: unknown, seen: Set<unknown> = new Set()): unknown => {
  if (defect instanceof Error) {
    if (seen.has(defect)) return "[Circular]"
    // A chain of causes longer than anyone reads is cut, before it could overflow the stack.
    if (seen.size >= maxCauses) return `[${maxCauses} causes shown, the rest cut]`
    const cause = defect.cause
    if (cause === undefined || (!(cause instanceof Error) && isPlainJson(cause, new Set()))) return defect
    seen.add(defect)
    const copy = new Error(defect.message, { cause: readableDefect(cause, seen) })
    copy.name = defect.name
    if (defect.stack !== undefined) copy.stack = defect.stack
    return copy
  }
  return isPlainJson(defect, new Set()) ? defect : inspect(defect, { depth: 6, breakLength: 120 })
}

/**
 * The same cause with each defect made {@link readableDefect}; with `failures`, typed failures
 * too (only for printing: they are no longer of their type).
 */
export const readableCause = <E>(cause: Cause.Cause<E>, failures = false): Cause.Cause<E> =>
  Cause.fromReasons(
    cause.reasons.map((reason) =>
      Cause.isDieReason(reason)
        ? Cause.makeDieReason(readableDefect(reason.defect))
        : failures && Cause.isFailReason(reason)
        ? Cause.makeFailReason(readableDefect(reason.error) as E)
        : reason
    )
  )

/** The same exit with each defect of its cause made {@link readableDefect}. */
export const readableExit = <A, E>(exit: Exit.Exit<A, E>): Exit.Exit<A, E> =>
  Exit.isSuccess(exit) ? exit : Exit.failCause(readableCause(exit.cause))
