#include "muninn/tools/commands.h"

int main(int argc, char** argv) { return muninn::tools::RunMuninn(argc, argv); }
