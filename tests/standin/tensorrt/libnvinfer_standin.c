/*
 * Stand-in for libnvinfer.so.<major>: only getInferLibVersion(), the one function the stand-in shim
 * calls. Built by the tests with -DSTANDIN_LIB_VERSION=8201 (8.x: M*1000+m*100+p; 10.x: M*10000+...)
 * and the soname of the real library, so the dynamic linker treats it as the real one would: a shim
 * linked against it does not load where it is absent from the loader's path.
 */
int getInferLibVersion(void);

int getInferLibVersion(void)
{
    return STANDIN_LIB_VERSION;
}
