{
  "targets": [
    {
      "target_name": "tocfs_native",
      "sources": ["native/tocfs_native.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-O2"],
      "defines": ["_GNU_SOURCE"]
    }
  ]
}
