/**
 * How an operation's options become settings, one rule for every operation: an option named
 * after a setting overrides that setting for the one call (an option left `undefined` leaves it);
 * `env` is added to the current variables; a relative `localWorkingDir` is taken from the current
 * one, as `lcd` takes it. Options that are no setting (`mode`, `onProgress`, `stream`...) belong to
 * the operation alone and are not read here.
 */
import { apply, defaults, type Patch, resolveLocal, type Settings } from "../../Settings.ts"

const isSetting = (key: string): key is keyof Settings => Object.hasOwn(defaults, key)

/** The settings of one call: the current ones with the call's options applied by the rule above. */
export const withOptions = (current: Settings, options: object | undefined): Settings => {
  if (options === undefined) return current
  const patch: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined || !isSetting(key)) continue
    patch[key] = key === "env"
      ? { ...current.env, ...(value as Record<string, string>) }
      : key === "localWorkingDir"
      ? resolveLocal(current, value as string)
      : value
  }
  return apply(current, patch as Patch)
}
