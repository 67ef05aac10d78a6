// Types of scripts/fdt-tools.mjs (the external FDT tools shared by ensure-tools and the tests).

/** Debian's interpreter: python3-libfdt is installed for it, not for a pyenv python3 on PATH. */
export declare const SYSTEM_PYTHON: "/usr/bin/python3";
/** The Debian packages that provide the tools. */
export declare const FDT_PACKAGES: readonly ["device-tree-compiler", "python3-libfdt"];
/** The shell command that installs them (as root). */
export declare const INSTALL_COMMAND: string;
/** True when `dtc --version` runs. */
export declare function haveDtc(): boolean;
/** True when {@link SYSTEM_PYTHON} can `import libfdt`. */
export declare function haveLibfdt(): boolean;
/** The missing tools, each described for a message; empty when both are installed. */
export declare function missingFdtTools(): string[];
