/**
 * effect-threadbare: deploy programs on Effect 4.
 *
 * @since 0.1.0
 */
export * as CommandResult from "./CommandResult.ts"
export * as Errors from "./Errors.ts"
export * as Events from "./Events.ts"
export * as Execute from "./Execute.ts"
export * as Operations from "./Operations.ts"
export * as Output from "./Output.ts"
export * as Report from "./Report.ts"
export * as Settings from "./Settings.ts"
export * as Shell from "./Shell.ts"
export * as Ssh from "./Ssh.ts"
export * as Task from "./Task.ts"
export * as Testing from "./Testing.ts"
export * as Threadbare from "./Threadbare.ts"
export * as Transfer from "./Transfer.ts"
