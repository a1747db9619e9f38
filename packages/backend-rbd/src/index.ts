/** Work in progress: see the package issue. */
export {};
