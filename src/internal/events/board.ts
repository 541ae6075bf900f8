/**
 * The live board of `Events.board`, as pure functions: {@link step} folds an event into a
 * {@link State}, {@link frame} draws a state as the lines of a terminal, {@link summary} as the
 * lines left behind when the run ends, and {@link change} gives the one plain line a host's
 * change of status prints where there is no terminal to redraw (a CI log).
 *
 * A state holds one row per host with only the last thing it printed, so its size follows the
 * number of hosts, never the number of output lines. Rows live in a `HashMap` so that an event
 * costs a lookup and an update, not a copy of the whole fleet.
 */
import * as HashMap from "effect/HashMap"
import type { Event, HostStatus } from "./event.ts"

/** Where a host is on the board: not yet started (`pending`), or running, or how it ended. */
export type Status = "pending" | "running" | HostStatus

/** One host of the board. */
export interface Row {
  readonly host: string
  readonly status: Status
  readonly batch: number | undefined
  readonly attempt: number
  /** When it started running (or was last seen changing status). */
  readonly since: number
  readonly durationMillis: number | undefined
  /** The last command it started, output line it printed or transfer step it made. */
  readonly last: string | undefined
  /** Why it failed or was not started. */
  readonly message: string | undefined
}

/** What the board knows of a run. */
export interface State {
  readonly task: string | undefined
  /** Hosts in the order they were first seen (the run's order when it announced them). */
  readonly order: ReadonlyArray<string>
  readonly rows: HashMap.HashMap<string, Row>
  /** How many batches the run has (0 outside `Execute.rolling`). */
  readonly batches: number
  /** The batch running now (0 before the first). */
  readonly batch: number
  readonly run: "running" | "completed" | "stopped"
  readonly reason: string | undefined
  /** The last gate that passed or failed, as a line. */
  readonly gate: string | undefined
  /** Times of the first and the last event seen. */
  readonly startedAt: number | undefined
  readonly lastAt: number | undefined
}

/** A board before its first event. */
export const initial: State = {
  task: undefined,
  order: [],
  rows: HashMap.empty(),
  batches: 0,
  batch: 0,
  run: "running",
  reason: undefined,
  gate: undefined,
  startedAt: undefined,
  lastAt: undefined
}

const pendingRow = (host: string, at: number, batch?: number): Row => ({
  host,
  status: "pending",
  batch,
  attempt: 0,
  since: at,
  durationMillis: undefined,
  last: undefined,
  message: undefined
})

// Adds hosts not seen yet, in their order; the others keep their rows.
const withHosts = (state: State, hosts: ReadonlyArray<string>, at: number, batch?: number): State => {
  let rows = state.rows
  const added: Array<string> = []
  for (const host of hosts) {
    const row = HashMap.get(rows, host)
    if (row._tag === "None") {
      added.push(host)
      rows = HashMap.set(rows, host, pendingRow(host, at, batch))
    } else if (batch !== undefined && row.value.batch !== batch) {
      rows = HashMap.set(rows, host, { ...row.value, batch })
    }
  }
  return { ...state, rows, order: added.length === 0 ? state.order : [...state.order, ...added] }
}

// Changes a known host's row; events about hosts the board does not show (a task's own
// `Events.publish` for its load balancer, a local command's `localhost`) change nothing.
const update = (state: State, host: string, f: (row: Row) => Row): State => {
  const row = HashMap.get(state.rows, host)
  return row._tag === "None" ? state : { ...state, rows: HashMap.set(state.rows, host, f(row.value)) }
}

const percent = (bytes: number, total: number | undefined): string =>
  total === undefined || total <= 0 ? `${bytes} bytes` : `${Math.floor((bytes * 100) / total)}%`

/** The board after `event`. */
export const step = (before: State, event: Event): State => {
  const state: State = { ...before, startedAt: before.startedAt ?? event.at, lastAt: event.at }
  switch (event._tag) {
    case "RunStarted":
      return {
        ...withHosts(state, event.hosts, event.at),
        task: event.task,
        batches: event.batches,
        run: "running",
        startedAt: event.at
      }
    case "BatchStarted":
      return { ...withHosts(state, event.hosts, event.at, event.batch), batch: event.batch }
    case "GatePassed":
      return { ...state, gate: `batch ${event.batch}: ${event.gate} gate passed` }
    case "GateFailed":
      return { ...state, gate: `batch ${event.batch}: ${event.gate} gate failed: ${event.message}` }
    case "HostStarted": {
      const known = withHosts(state, [event.host], event.at, event.batch)
      return update(known, event.host, (row) => ({
        ...row,
        status: "running",
        attempt: event.attempt,
        since: event.at,
        message: undefined,
        last: event.attempt > 1 ? `attempt ${event.attempt}` : undefined
      }))
    }
    case "CommandStarted":
      return update(state, event.host, (row) => ({ ...row, last: `${event.verb}: ${event.command}` }))
    case "OutputLine":
      return update(state, event.host, (row) => ({ ...row, last: `${event.pipe}: ${event.line}` }))
    case "TransferProgress":
      return update(state, event.host, (row) => ({
        ...row,
        last: `${event.direction} ${event.path}: ${event.done ? "done" : percent(event.bytes, event.total)}`
      }))
    case "HostFinished": {
      const known = withHosts(state, [event.host], event.at, event.batch)
      return update(known, event.host, (row) => ({
        ...row,
        status: event.status,
        attempt: event.attempts,
        since: event.at,
        durationMillis: event.durationMillis,
        message: event.message
      }))
    }
    case "BatchFinished":
      return state
    case "RunFinished":
      return { ...state, run: event.status, reason: event.reason }
  }
}

/** How many hosts are in each status. */
export interface Counts {
  readonly total: number
  readonly pending: number
  readonly running: number
  readonly succeeded: number
  readonly failed: number
  readonly interrupted: number
  readonly notStarted: number
}

/** Counts the hosts of `state` by status. */
export const counts = (state: State): Counts => {
  const c = { pending: 0, running: 0, succeeded: 0, failed: 0, interrupted: 0, "not-started": 0 }
  for (const row of HashMap.values(state.rows)) c[row.status]++
  return {
    total: state.order.length,
    pending: c.pending,
    running: c.running,
    succeeded: c.succeeded,
    failed: c.failed,
    interrupted: c.interrupted,
    notStarted: c["not-started"]
  }
}

/**
 * A line as the terminal may show it: escape sequences and control characters of a command's
 * output would move the cursor and break the board, so they go.
 */
export const clean = (text: string): string => {
  let out = ""
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code === 0x1b) {
      // CSI (`ESC [ ... final`) and two-character escapes.
      if (text[i + 1] === "[") {
        i += 2
        while (i < text.length && !(text.charCodeAt(i) >= 0x40 && text.charCodeAt(i) <= 0x7e)) i++
      } else i++
      continue
    }
    // C1 (U+0080..U+009F) holds an 8-bit CSI and a new line that xterm and VTE obey.
    out += code < 0x20 || (code >= 0x7f && code <= 0x9f) ? " " : text[i]
  }
  return out
}

/** At most `width` characters (code points) of `text`, ending in `…` when cut. */
export const fit = (text: string, width: number): string => {
  const chars = Array.from(text)
  if (chars.length <= width) return text
  return width <= 0 ? "" : `${chars.slice(0, width - 1).join("")}…`
}

const seconds = (millis: number): string =>
  millis < 60_000 ?
    `${(millis / 1000).toFixed(1)}s` :
    `${Math.floor(millis / 60_000)}m${String(Math.floor((millis % 60_000) / 1000)).padStart(2, "0")}s`

const words: Record<Status, string> = {
  pending: "pending",
  running: "running",
  succeeded: "done",
  failed: "failed",
  interrupted: "interrupted",
  "not-started": "not started"
}

const colors: Record<Status, string> = {
  pending: "2",
  running: "36",
  succeeded: "32",
  failed: "31",
  interrupted: "33",
  "not-started": "33"
}

/** How {@link frame} and {@link summary} draw. */
export interface DrawOptions {
  /** The terminal's width: no line is longer (a longer one would wrap and break the redraw). */
  readonly width: number
  /** The terminal's height: with more hosts than fit, the running and failed ones are shown. */
  readonly height?: number | undefined
  /** The time now, for the running hosts' durations. */
  readonly now: number
  /** Colour the status words with ANSI codes. */
  readonly color?: boolean | undefined
}

const headline = (state: State, now: number): string => {
  const c = counts(state)
  const parts = [state.task ?? "run"]
  if (state.batches > 0) parts.push(`batch ${state.batch}/${state.batches}`)
  const done = c.succeeded + c.failed + c.interrupted + c.notStarted
  const ended = [
    `${c.succeeded} done`,
    ...(c.failed > 0 ? [`${c.failed} failed`] : []),
    ...(c.interrupted > 0 ? [`${c.interrupted} interrupted`] : []),
    ...(c.notStarted > 0 ? [`${c.notStarted} not started`] : [])
  ]
  parts.push(`${done}/${c.total} hosts: ${ended.join(", ")}`)
  if (c.running > 0) parts.push(`${c.running} running`)
  if (c.pending > 0) parts.push(`${c.pending} pending`)
  if (state.startedAt !== undefined) parts.push(seconds(now - state.startedAt))
  return parts.join(" · ")
}

const rowLine = (row: Row, hostWidth: number, options: DrawOptions): string => {
  const word = words[row.status]
  const time = row.status === "running"
    ? seconds(options.now - row.since)
    : row.durationMillis !== undefined && row.status !== "not-started"
    ? seconds(row.durationMillis)
    : ""
  const detail = row.status === "running" ? row.last : row.message
  const head = `  ${fit(row.host, hostWidth).padEnd(hostWidth)}  ${word.padEnd(11)} ${time.padStart(6)}`
  const line = fit(detail === undefined ? head : `${head}  ${clean(detail)}`, options.width).trimEnd()
  // Coloured after fitting, so the codes never count against the width.
  const at = 2 + hostWidth + 2
  if (options.color !== true || line.length < at + word.length) return line
  return `${line.slice(0, at)}\x1b[${colors[row.status]}m${word}\x1b[0m${line.slice(at + word.length)}`
}

// The hosts most worth a line when not all fit: failures first, then what runs, then the rest.
const rank: Record<Status, number> = {
  failed: 0,
  interrupted: 0,
  running: 1,
  pending: 2,
  "not-started": 3,
  succeeded: 4
}

const rowsOf = (state: State): Array<Row> =>
  state.order.flatMap((host) => {
    const row = HashMap.get(state.rows, host)
    return row._tag === "None" ? [] : [row.value]
  })

/** The board as terminal lines: a headline, the last gate, then one line per host. */
export const frame = (state: State, options: DrawOptions): Array<string> => {
  const rows = rowsOf(state)
  const hostWidth = Math.min(30, Math.max(4, ...rows.map((r) => r.host.length)))
  const lines = [fit(headline(state, options.now), options.width)]
  if (state.gate !== undefined) lines.push(fit(`  ${clean(state.gate)}`, options.width))
  const room = options.height === undefined ? Infinity : Math.max(1, options.height - 1 - lines.length)
  if (rows.length <= room) return [...lines, ...rows.map((row) => rowLine(row, hostWidth, options))]
  // One line goes to saying how many are left out.
  const keep = new Set(
    rows.map((row, index) => ({ row, index }))
      .sort((a, b) => rank[a.row.status] - rank[b.row.status] || a.index - b.index)
      .slice(0, room - 1)
      .map(({ row }) => row.host)
  )
  const shown = rows.filter((row) => keep.has(row.host))
  const hidden = rows.filter((row) => !keep.has(row.host))
  const byStatus = new Map<Status, number>()
  for (const row of hidden) byStatus.set(row.status, (byStatus.get(row.status) ?? 0) + 1)
  const more = `  … ${hidden.length} more: ${
    [...byStatus].map(([status, n]) => `${n} ${words[status]}`).join(", ")
  }`
  return [...lines, ...shown.map((row) => rowLine(row, hostWidth, options)), fit(more, options.width)]
}

/**
 * What stays once the run is over: how it ended, its counts, and a line for every host that
 * did not succeed (with its message), whatever the terminal's height.
 */
export const summary = (state: State, options: DrawOptions): Array<string> => {
  const c = counts(state)
  const took = state.startedAt === undefined || state.lastAt === undefined
    ? ""
    : ` in ${seconds(state.lastAt - state.startedAt)}`
  const how = state.run === "stopped" ? `stopped: ${state.reason ?? "stopped"}` : "finished"
  const tally = [
    `${c.succeeded} done`,
    `${c.failed} failed`,
    ...(c.interrupted > 0 ? [`${c.interrupted} interrupted`] : []),
    ...(c.notStarted > 0 ? [`${c.notStarted} not started`] : []),
    ...(c.pending + c.running > 0 ? [`${c.pending + c.running} never finished`] : [])
  ]
  const rows = rowsOf(state).filter((row) => row.status !== "succeeded")
  const hostWidth = Math.min(30, Math.max(4, ...rows.map((r) => r.host.length)))
  return [
    fit(clean(`${state.task ?? "run"} ${how}`), options.width),
    fit(`  ${c.total} hosts: ${tally.join(", ")}${took}`, options.width),
    ...rows.map((row) => rowLine(row, hostWidth, { ...options, now: state.lastAt ?? options.now }))
  ]
}

/**
 * The plain line an event prints where the board cannot be redrawn: hosts starting and ending,
 * batches and gates; `undefined` for the rest (commands, output, transfer progress), which
 * would flood a CI log.
 */
export const change = (event: Event): string | undefined => {
  switch (event._tag) {
    case "RunStarted":
      return `${event.task}: ${event.hosts.length} hosts in ${event.batches} batch${
        event.batches === 1 ? "" : "es"
      }`
    case "BatchStarted":
      return `batch ${event.batch} started: ${event.hosts.length} host${event.hosts.length === 1 ? "" : "s"}`
    case "GatePassed":
      return `batch ${event.batch}: ${event.gate} gate passed`
    case "GateFailed":
      return `batch ${event.batch}: ${event.gate} gate failed: ${clean(event.message)}`
    case "HostStarted":
      return `[${event.host}] running${event.attempt > 1 ? ` (attempt ${event.attempt})` : ""}`
    case "HostFinished": {
      const why = event.message === undefined ? "" : `: ${clean(event.message)}`
      return event.status === "not-started"
        ? `[${event.host}] not started${why}`
        : `[${event.host}] ${words[event.status]} in ${seconds(event.durationMillis)}${why}`
    }
    case "BatchFinished":
      return `batch ${event.batch} ${event.status} (${event.failures} failed)`
    default:
      return undefined
  }
}
