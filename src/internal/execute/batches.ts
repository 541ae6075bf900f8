/**
 * The arithmetic of rolling runs: hosts cut into batches by sizes or percentages, and failure
 * budgets given as counts or percentages. Pure functions; `rolling.ts` runs what they plan.
 */
import { SettingsError } from "../../Errors.ts"

/**
 * A batch size or a failure budget: a count of hosts, or a percentage such as `"25%"`.
 *
 * @example
 * ```ts
 * const canaryThenQuarters: ReadonlyArray<Execute.Amount> = [1, "25%"]
 * ```
 *
 * @since 0.2.0
 */
export type Amount = number | `${number}%`

const parse = (
  setting: string,
  amount: Amount
): { readonly count: number } | { readonly percent: number } => {
  if (typeof amount === "number") {
    if (!Number.isInteger(amount) || amount < 0) {
      throw new SettingsError({
        setting,
        value: String(amount),
        detail: "give a whole number, 0 or more, or a percentage such as \"25%\""
      })
    }
    return { count: amount }
  }
  const match = /^(\d+(?:\.\d+)?)%$/.exec(amount)
  const percent = match === null ? Number.NaN : Number(match[1])
  if (Number.isNaN(percent) || percent > 100) {
    throw new SettingsError({
      setting,
      value: String(amount),
      detail: "a percentage is a number from 0 to 100 followed by %, such as \"25%\""
    })
  }
  return { percent }
}

/**
 * How many of `of` an amount stands for: a count as it is (at most `of`), a percentage of `of`
 * rounded down.
 */
export const amountOf = (setting: string, amount: Amount, of: number): number => {
  const parsed = parse(setting, amount)
  return "count" in parsed ? Math.min(parsed.count, of) : Math.floor((parsed.percent * of) / 100)
}

/**
 * Cuts `hosts` into batches of `sizes`, in order: a count, or a percentage of all the hosts
 * rounded down and at least 1. The last size repeats until every host is in a batch, so
 * `[1, "25%", "100%"]` is a canary, then a quarter of the fleet, then the rest. Throws a
 * `SettingsError` for a size of 0, a bad percentage or an empty list.
 */
export const plan = (hosts: ReadonlyArray<string>, sizes: ReadonlyArray<Amount>): Array<Array<string>> => {
  if (sizes.length === 0) {
    throw new SettingsError({
      setting: "batches",
      value: "[]",
      detail: "give at least one batch size, such as [\"100%\"]"
    })
  }
  const counts = sizes.map((size) => {
    const count = Math.max(1, amountOf("batches", size, hosts.length))
    if (typeof size === "number" && size === 0) {
      throw new SettingsError({ setting: "batches", value: "0", detail: "a batch holds at least one host" })
    }
    return count
  })
  const batches: Array<Array<string>> = []
  let next = 0
  for (let i = 0; next < hosts.length; i++) {
    const count = counts[Math.min(i, counts.length - 1)]!
    batches.push(hosts.slice(next, next + count))
    next += count
  }
  return batches
}

/** Refuses a host given twice (it would run twice, at once, in one deploy). */
export const checkDistinct = (setting: string, hosts: ReadonlyArray<string>): void => {
  const seen = new Set<string>()
  for (const host of hosts) {
    if (seen.has(host)) {
      throw new SettingsError({
        setting,
        value: host,
        detail: "this host is given twice; give each host once"
      })
    }
    seen.add(host)
  }
}

/** A `SettingsError` for an option of a rolling run that no single value explains. */
export const settingsError = (setting: string, detail: string): SettingsError =>
  new SettingsError({ setting, value: "", detail })
