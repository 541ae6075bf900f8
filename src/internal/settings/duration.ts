/**
 * Duration settings: reading a duration input (`Settings.apply`) and refusing one that cannot be
 * used (`SettingsError`), the same way for every duration setting, here and in workers.
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import { SettingsError } from "../../Errors.ts"

/**
 * What a duration input that is no duration (`NaN`, text that does not read as one) becomes:
 * `apply` cannot fail, and quietly reading `NaN` as zero would turn a time limit into an instant
 * time-out. Every check of a duration setting ({@link durationError}) refuses it instead.
 */
export const notADuration: Duration.Duration = Duration.millis(Number.NEGATIVE_INFINITY)

/** A duration input as a duration; {@link notADuration} for one that is none. */
export const toDuration = (value: Duration.Input): Duration.Duration =>
  typeof value === "number" && Number.isNaN(value)
    ? notADuration
    : Option.getOrElse(Duration.fromInput(value), () => notADuration)

/** Whether a duration setting came from an input that is no duration. */
export const isNotADuration = (duration: Duration.Duration): boolean =>
  Duration.toMillis(duration) === Number.NEGATIVE_INFINITY

/**
 * The refusal of a duration setting that is negative or no duration at all, or `undefined` when
 * it can be used. `example` is a value to suggest; `negative` says why a negative one cannot be.
 */
export const durationError = (
  setting: string,
  duration: Duration.Duration,
  options: { readonly example: string; readonly negative: string }
): SettingsError | undefined => {
  const millis = Duration.toMillis(duration)
  if (millis >= 0) return undefined
  const invalid = isNotADuration(duration)
  return new SettingsError({
    setting,
    value: invalid ? "not a duration" : `${millis} millis`,
    detail: invalid
      ? `not a duration (NaN, or text that does not read as one); give one such as ${options.example}`
      : `${options.negative}; give one such as ${options.example}`
  })
}
